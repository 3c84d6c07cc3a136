"""Every PostgreSQL connection the platform opens, described in one place.

SQLMesh's state, DuckLake's catalog, the plan lock and the shop database are all reached with
parameters built here, so one setting, ``PIPELINES_PG_SSLMODE``, decides TLS for all of them:
``require`` by default in prod (as Dagster's own storage), ``prefer`` locally. Passwords come from
the environment and never appear in ``repr`` or in the descriptions that get logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster_sqlmesh_bridge.identifiers import safe_identifier, sql_string
from pipelines.platform.settings import SettingsError

SSLMODE_ENV = "PIPELINES_PG_SSLMODE"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def pg_sslmode(environ: Mapping[str, str] | None = None) -> str:
    """libpq's ``sslmode`` for every connection: ``PIPELINES_PG_SSLMODE``, else ``require`` in
    prod and ``prefer`` locally."""
    env = os.environ if environ is None else environ
    prod = env.get("PIPELINES_ENV", "local").strip() == "prod"
    mode = env.get(SSLMODE_ENV, "").strip() or ("require" if prod else "prefer")
    if mode not in SSLMODES:
        raise SettingsError(f"{SSLMODE_ENV} must be one of {', '.join(SSLMODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class PostgresParams:
    host: str
    port: str
    user: str
    password: str = field(repr=False)
    dbname: str
    sslmode: str

    def libpq(self) -> str:
        """A libpq keyword string without the password (DuckLake's ``postgres:`` path); the
        password travels in a DuckDB secret instead."""
        parts = {"dbname": self.dbname, "sslmode": self.sslmode}
        return " ".join(f"{k}={v}" for k, v in parts.items() if v)

    def secret_options(self) -> dict[str, str]:
        """Options of a DuckDB ``postgres`` secret (also SQLMesh's gateway ``secrets`` entry)."""
        options = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.dbname,
            "sslmode": self.sslmode,
        }
        return {k: v for k, v in options.items() if v}

    def create_secret_sql(self, name: str = "", replace: bool = False) -> str:
        """``CREATE TEMPORARY SECRET`` for DuckDB (values quoted: CREATE SECRET takes no
        parameters). Unnamed, it is the default postgres secret DuckLake's catalog uses."""
        fields = ", ".join(f"{k.upper()} {sql_string(v)}" for k, v in self.secret_options().items())
        verb = "CREATE OR REPLACE" if replace else "CREATE"
        return f"{verb} TEMPORARY SECRET {name} (TYPE postgres, {fields})"

    def describe(self) -> str:
        """Where it points, safe to log."""
        return f"postgres://{self.host}:{self.port}/{self.dbname} (sslmode={self.sslmode})"


def metadata_params(
    database_env: str, default_database: str, environ: Mapping[str, str] | None = None
) -> PostgresParams:
    """The metadata PostgreSQL (``PIPELINES_PG_*``): SQLMesh state or DuckLake's catalog,
    according to ``database_env`` (``PIPELINES_SQLMESH_STATE_DB`` / ``PIPELINES_DUCKLAKE_DB``)."""
    env = os.environ if environ is None else environ
    return PostgresParams(
        host=env.get("PIPELINES_PG_HOST", "").strip() or "localhost",
        port=env.get("PIPELINES_PG_PORT", "").strip() or "5432",
        user=env.get("PIPELINES_PG_USER", "").strip() or "pipelines",
        password=env.get("PIPELINES_PG_PASSWORD", "").strip(),
        dbname=env.get(database_env, "").strip() or default_database,
        sslmode=pg_sslmode(env),
    )


def ducklake_catalog_params(environ: Mapping[str, str] | None = None) -> PostgresParams:
    return metadata_params("PIPELINES_DUCKLAKE_DB", "ducklake", environ)


def sqlmesh_state_params(environ: Mapping[str, str] | None = None) -> PostgresParams:
    return metadata_params("PIPELINES_SQLMESH_STATE_DB", "sqlmesh", environ)


def ducklake_metadata_schema(environ: Mapping[str, str] | None = None) -> str:
    """The PostgreSQL schema of DuckLake's catalog tables (``PIPELINES_DUCKLAKE_SCHEMA``), validated
    once here because every reader, writer and maintenance job puts it into SQL."""
    env = os.environ if environ is None else environ
    return safe_identifier(
        env.get("PIPELINES_DUCKLAKE_SCHEMA", "").strip() or "main", "PIPELINES_DUCKLAKE_SCHEMA"
    )
