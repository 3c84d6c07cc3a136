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

from pipelines.duckdb_s3 import s3_secret_options


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def prod_gateway() -> GatewayConfig:
    """DuckDB with a DuckLake catalog in PostgreSQL and data on S3; SQLMesh state in PostgreSQL."""
    host, port, user = (
        _env("PIPELINES_PG_HOST", "localhost"),
        _env("PIPELINES_PG_PORT", "5432"),
        _env("PIPELINES_PG_USER", "pipelines"),
    )
    password = _env("PIPELINES_PG_PASSWORD")
    lake = _env("PIPELINES_LAKE_URI", "s3://lake").rstrip("/")
    catalog_db = _env("PIPELINES_DUCKLAKE_DB", "ducklake")
    secrets: list[dict[str, str]] = [
        {
            "type": "postgres",
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": catalog_db,
        }
    ]
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
                    "path": f"postgres:dbname={catalog_db}",
                    "data_path": f"{lake}/warehouse/",
                    "metadata_schema": _env("PIPELINES_DUCKLAKE_SCHEMA", "main"),
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
            host=host,
            port=int(port or 5432),
            user=user,
            password=password,
            database=_env("PIPELINES_SQLMESH_STATE_DB", "sqlmesh"),
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
