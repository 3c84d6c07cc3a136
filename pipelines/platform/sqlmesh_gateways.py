"""SQLMesh gateways for production engines, built only from environment variables."""

from __future__ import annotations

import os

from sqlmesh.core.config import GatewayConfig
from sqlmesh.core.config.connection import (
    AthenaConnectionConfig,
    DuckDBConnectionConfig,
    PostgresConnectionConfig,
    TrinoConnectionConfig,
)

from pipelines.platform.duckdb_s3 import s3_secret_options
from pipelines.platform.postgres import (
    ducklake_catalog_params,
    ducklake_metadata_schema,
    sqlmesh_state_params,
)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def prod_gateway() -> GatewayConfig:
    """DuckDB with a DuckLake catalog in PostgreSQL and data on S3; SQLMesh state in PostgreSQL.

    Both PostgreSQL connections come from ``pipelines.platform.postgres`` (one ``sslmode`` setting)."""
    catalog, state = ducklake_catalog_params(), sqlmesh_state_params()
    lake = _env("PIPELINES_LAKE_URI", "s3://lake").rstrip("/")
    secrets: list[dict[str, str]] = [{"type": "postgres", **catalog.secret_options()}]
    extensions = ["httpfs", "ducklake", "postgres"]
    if lake.startswith("s3://"):
        s3 = s3_secret_options()
        secrets.append(s3)
        if s3.get("provider") == "credential_chain":
            extensions.append("aws")
    return GatewayConfig(
        connection=DuckDBConnectionConfig(
            catalogs={
                "lake": {
                    "type": "ducklake",
                    "path": f"postgres:{catalog.libpq()}",
                    "data_path": f"{lake}/warehouse/",
                    "metadata_schema": ducklake_metadata_schema(),
                    # small writes would otherwise be inlined into PostgreSQL, not written to S3
                    "data_inlining_row_limit": int(_env("PIPELINES_DUCKLAKE_INLINE_ROWS", "0")),
                }
            },
            extensions=extensions,
            secrets=secrets,
            concurrent_tasks=1,
            register_comments=False,
        ),
        state_connection=PostgresConnectionConfig(
            host=state.host,
            port=int(state.port),
            user=state.user,
            password=state.password,
            database=state.dbname,
            sslmode=state.sslmode,  # the plan lock reuses it (postgres_plan_lock)
        ),
        state_schema=_env("PIPELINES_SQLMESH_STATE_SCHEMA", "sqlmesh"),
    )


def athena_gateway() -> GatewayConfig:
    """Amazon Athena with Iceberg tables; credentials from the pod's IAM role."""
    return GatewayConfig(
        connection=AthenaConnectionConfig(
            work_group=_env("ATHENA_WORK_GROUP", "primary"),
            s3_warehouse_location=_env("ATHENA_S3_WAREHOUSE", "s3://lake/athena/"),
            region_name=_env("AWS_REGION", "eu-west-1"),
        ),
        state_connection=DuckDBConnectionConfig(database=":memory:"),
    )


def trino_gateway() -> GatewayConfig:
    """Trino with an Iceberg catalog."""
    return GatewayConfig(
        connection=TrinoConnectionConfig(
            host=_env("TRINO_HOST", "trino"),
            port=int(_env("TRINO_PORT", "8080")),
            user=_env("TRINO_USER", "pipelines"),
            catalog=_env("TRINO_CATALOG", "iceberg"),
            http_scheme=_env("TRINO_HTTP_SCHEME", "http"),
        ),
        state_connection=DuckDBConnectionConfig(database=":memory:"),
    )
