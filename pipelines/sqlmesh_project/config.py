"""SQLMesh configuration for the bundled shop project.

Gateways (pick one with ``SQLMESH_GATEWAY`` or ``sqlmesh --gateway``):
- ``local`` (default): a DuckDB file for the warehouse, a second DuckDB file for state.
- ``prod``: DuckDB with a DuckLake catalog (metadata in PostgreSQL, data on S3), state in PostgreSQL.
- ``athena`` / ``trino``: for teams whose lake already lives there (Iceberg tables).
Every value comes from the environment; see the README's settings table.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlmesh.core.config import (
    Config,
    GatewayConfig,
    ModelDefaultsConfig,
    NameInferenceConfig,
)
from sqlmesh.core.config.connection import DuckDBConnectionConfig

from pipelines.duckdb_extensions import install_extensions
from pipelines.partitions import PROJECT_START
from pipelines.settings import require_production_settings
from pipelines.sqlmesh_gateways import athena_gateway, prod_gateway, trino_gateway

install_extensions()
# prod never hashes PII with the development salt of @mask_pii, even from the plain sqlmesh CLI
require_production_settings(names=("PIPELINES_PII_SALT",))

data_dir = Path(os.environ.get("PIPELINES_DATA_DIR", "").strip() or "./.data").expanduser().resolve()
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
)
