"""The API's own read-only view of the warehouse.

Locally it is the DuckDB file opened read-only. In prod it is the DuckLake catalog attached
``READ_ONLY`` with the API's own PostgreSQL role (``PIPELINES_API_PG_USER`` /
``PIPELINES_API_PG_PASSWORD``, a role with ``SELECT`` only on the catalog database), so a bug in
the API cannot write to the catalog whatever DuckDB does. Attaching costs about a second (the
catalog login, the S3 credentials), so each process keeps one attached in-memory DuckDB and gives
every request its own cursor on it (each DuckLake transaction reads the latest committed
snapshot); the attachment is renewed after ``PIPELINES_API_CONNECTION_TTL`` seconds (default
300, shorter than IRSA credentials live) and after any error. Replicas share nothing but the
catalog. Locally each request opens the DuckDB file read-only and closes it, so the API never
holds the file while a run writes it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

import duckdb

from dagster_sqlmesh_bridge.identifiers import safe_identifier
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.duckdb_s3 import configure_s3
from pipelines.platform.postgres import ducklake_metadata_schema, pg_sslmode
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import connect as connect_local


class ApiConfigError(RuntimeError):
    """The API is missing a setting it needs to reach the production catalog."""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def catalog_login(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """libpq fields for the API's read-only role; the user is required in prod. TLS follows
    ``PIPELINES_PG_SSLMODE`` like every other connection (``require`` by default in prod)."""
    env = os.environ if environ is None else environ
    user = env.get("PIPELINES_API_PG_USER", "").strip()
    if not user:
        raise ApiConfigError(
            "PIPELINES_API_PG_USER is not set: the API reads the DuckLake catalog with its own "
            "read-only PostgreSQL role (GRANT SELECT on the catalog), not the pipeline's login"
        )
    return {
        "HOST": env.get("PIPELINES_PG_HOST", "localhost"),
        "PORT": env.get("PIPELINES_PG_PORT", "5432"),
        "USER": user,
        "PASSWORD": env.get("PIPELINES_API_PG_PASSWORD", ""),
        "DATABASE": env.get("PIPELINES_DUCKLAKE_DB", "ducklake"),
        "SSLMODE": pg_sslmode(env),
    }


def connect_readonly(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-only connection whose default catalog holds ``marts``; the caller closes it."""
    if settings.env != "prod":
        return connect_local(settings, read_only=True)
    env = os.environ if environ is None else environ
    fields = catalog_login(env)
    database = safe_identifier(fields["DATABASE"], "PIPELINES_DUCKLAKE_DB")
    schema = ducklake_metadata_schema(env)
    install_extensions()
    con = duckdb.connect()
    try:
        con.execute("LOAD ducklake; LOAD postgres_scanner")
        if settings.lake_is_s3:
            configure_s3(con)
        secret = ", ".join(f"{k} {_literal(v)}" for k, v in fields.items() if v)
        con.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, {secret})")
        data_path = settings.lake_uri.rstrip("/") + "/warehouse/"
        con.execute(
            f"ATTACH 'ducklake:postgres:dbname={database}' AS lake "
            f"(DATA_PATH {_literal(data_path)}, METADATA_SCHEMA {_literal(schema)}, READ_ONLY)"
        )
        con.execute("USE lake")
    except BaseException:
        con.close()
        raise
    return con


class CatalogConnections:
    """Per-process read-only connections: a shared attachment in prod, a fresh file locally."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        env = os.environ if environ is None else environ
        self.environ = dict(env)
        ttl_text = env.get("PIPELINES_API_CONNECTION_TTL", "").strip() or "300"
        try:
            self.ttl = float(ttl_text)
        except ValueError:
            raise ApiConfigError(f"PIPELINES_API_CONNECTION_TTL must be seconds, got {ttl_text!r}") from None
        self._lock = threading.Lock()
        self._base: duckdb.DuckDBPyConnection | None = None
        self._opened = 0.0

    def get(self) -> duckdb.DuckDBPyConnection:
        """A connection for one request; the caller closes it."""
        if self.settings.env != "prod":
            return connect_readonly(self.settings, self.environ)
        with self._lock:
            if self._base is None or time.monotonic() - self._opened > self.ttl:
                # the old attachment is dropped, not closed: requests may still use its cursors
                self._base = connect_readonly(self.settings, self.environ)
                self._opened = time.monotonic()
            cursor = self._base.cursor()
        try:
            cursor.execute("USE lake")  # a cursor starts in the in-memory database, not in USE's
        except BaseException:
            cursor.close()
            raise
        return cursor

    def discard(self) -> None:
        """Forget the shared attachment (after an error): the next request attaches again."""
        with self._lock:
            self._base = None
