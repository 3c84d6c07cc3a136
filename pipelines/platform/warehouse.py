"""Read access to the warehouse the SQLMesh models write: a DuckDB file locally, DuckLake in prod.

Readers (checks, reports, the data API) use this instead of opening files themselves, so the
``local``/``prod`` switch lives in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import duckdb

from dagster_sqlmesh_bridge.identifiers import sql_string
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.duckdb_s3 import configure_s3
from pipelines.platform.postgres import ducklake_catalog_params, ducklake_metadata_schema
from pipelines.platform.settings import Settings, require_production_settings

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.quality.checks import Connect

# what a reader of the prod warehouse needs (the data API pod has no shop or rates settings)
READER_REQUIRED = ("PIPELINES_LAKE_URI", "PIPELINES_PG_HOST", "PIPELINES_PG_USER", "PIPELINES_PG_PASSWORD")


def warehouse_path(settings: Settings) -> str:
    return str(settings.data_dir / "warehouse.duckdb")


def _connect_ducklake(settings: Settings, read_only: bool) -> duckdb.DuckDBPyConnection:
    schema = ducklake_metadata_schema()  # refused before any connection is opened
    install_extensions()
    con = duckdb.connect()
    con.execute("LOAD ducklake; LOAD postgres_scanner")
    if settings.lake_is_s3:
        configure_s3(con)
    catalog = ducklake_catalog_params()
    # unnamed: the default postgres secret, which DuckLake uses for its metadata connection
    con.execute(catalog.create_secret_sql())
    mode = ", READ_ONLY" if read_only else ""
    data_path = settings.lake_uri.rstrip("/") + "/warehouse/"
    con.execute(
        f"ATTACH {sql_string('ducklake:postgres:' + catalog.libpq())} AS lake "
        f"(DATA_PATH {sql_string(data_path)}, METADATA_SCHEMA {sql_string(schema)}{mode})"
    )
    con.execute("USE lake")
    return con


def connect(settings: Settings | None = None, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog holds the SQLMesh schemas (``marts.daily_revenue``…)."""
    settings = settings or Settings.from_env()
    if settings.env == "prod":
        require_production_settings(names=READER_REQUIRED)
        return _connect_ducklake(settings, read_only)
    path = warehouse_path(settings)
    # A run may hold the file's write lock for a moment: wait briefly instead of failing.
    for attempt in range(20):
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == 19:
                raise
            time.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")


@contextmanager
def warehouse(
    settings: Settings | None = None, read_only: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(settings, read_only)
    try:
        yield con
    finally:
        con.close()


def warehouse_writer(settings: Callable[[], Settings] = Settings.from_env) -> Connect:
    """Connections to the deployment's warehouse, writable (the quality history table lives there):
    what the platform gives the integration's checks of the bundled project."""
    return lambda: warehouse(settings(), read_only=False)
