"""SQLMesh configuration for the bundled shop project.

Gateways (pick one with ``SQLMESH_GATEWAY`` or ``sqlmesh --gateway``):
- ``local`` (default): a DuckDB file for the warehouse, a second DuckDB file for state.
- ``prod``: DuckDB with a DuckLake catalog (metadata in PostgreSQL, data on S3), state in PostgreSQL.
- ``athena`` / ``trino``: for teams whose lake already lives there (Iceberg tables).
Every value comes from the environment; see the README's settings table.
"""

from __future__ import annotations

import os

from sqlmesh.core.config import (
    Config,
    GatewayConfig,
    LinterConfig,
    ModelDefaultsConfig,
    NameInferenceConfig,
)
from sqlmesh.core.config.connection import DuckDBConnectionConfig

from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.partitions import PROJECT_START
from pipelines.platform.settings import local_path, require_production_settings
from pipelines.platform.sqlmesh_gateways import athena_gateway, prod_gateway, trino_gateway

install_extensions()
# prod never hashes PII with the development salt of @mask_pii, even from the plain sqlmesh CLI
require_production_settings(names=("PIPELINES_PII_SALT",))

# A relative PIPELINES_DATA_DIR (default ``./.data``) is taken from the repository root exactly as
# Dagster's settings take it (``local_path``): ``sqlmesh`` run inside this folder, and every
# ``pipelines`` command started in any subfolder, see the warehouse the demo and the UI wrote,
# not a new empty one next to the models.
data_dir = local_path(os.environ.get("PIPELINES_DATA_DIR", "").strip() or "./.data")
data_dir.mkdir(parents=True, exist_ok=True)

local = GatewayConfig(
    connection=DuckDBConnectionConfig(
        database=str(data_dir / "warehouse.duckdb"),
        extensions=["httpfs"],
        concurrent_tasks=1,
    ),
    state_connection=DuckDBConnectionConfig(database=str(data_dir / "sqlmesh_state.duckdb")),
)

config = Config(
    gateways={
        "local": local,
        "prod": prod_gateway(),
        "athena": athena_gateway(),
        "trino": trino_gateway(),
    },
    default_gateway="local",
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start=PROJECT_START, cron="@daily"),
    model_naming=NameInferenceConfig(infer_names=False),
    before_all=["@create_raw_views()"],
    # SQLMesh's linter: every built-in rule and ours (linter/rules.py) are errors, so `sqlmesh
    # lint`, every plan and CI (pipelines_tests/test_sqlmesh_project.py) fail on a violation.
    linter=LinterConfig(enabled=True, rules={"all"}),
)
