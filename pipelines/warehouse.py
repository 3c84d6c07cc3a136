"""Read access to the warehouse the SQLMesh models write: a DuckDB file locally, DuckLake in prod.

Readers (checks, reports, the data API) use this instead of opening files themselves, so the
``local``/``prod`` switch lives in one place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from pipelines.duckdb_extensions import install_extensions
from pipelines.duckdb_s3 import configure_s3
from pipelines.settings import Settings


def warehouse_path(settings: Settings) -> str:
    return str(settings.data_dir / "warehouse.duckdb")


def _connect_ducklake(settings: Settings, read_only: bool) -> duckdb.DuckDBPyConnection:
    install_extensions()
    con = duckdb.connect()
    con.execute("LOAD ducklake; LOAD postgres_scanner")
    if settings.lake_is_s3:
        configure_s3(con)
    env = os.environ
    fields = {
        "HOST": env.get("PIPELINES_PG_HOST", "localhost"),
        "PORT": env.get("PIPELINES_PG_PORT", "5432"),
        "USER": env.get("PIPELINES_PG_USER", "pipelines"),
        "PASSWORD": env.get("PIPELINES_PG_PASSWORD", ""),
        "DATABASE": env.get("PIPELINES_DUCKLAKE_DB", "ducklake"),
    }
    literal = ", ".join(f"{k} '{v.replace(chr(39), chr(39) * 2)}'" for k, v in fields.items() if v)
    # unnamed: the default postgres secret, which DuckLake uses for its metadata connection
    con.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, {literal})")
    mode = ", READ_ONLY" if read_only else ""
    data_path = settings.lake_uri.rstrip("/") + "/warehouse/"
    con.execute(
        f"ATTACH 'ducklake:postgres:dbname={fields['DATABASE']}' AS lake "
        f"(DATA_PATH '{data_path}', METADATA_SCHEMA '{env.get('PIPELINES_DUCKLAKE_SCHEMA', 'main')}'"
        f"{mode})"
    )
    con.execute("USE lake")
    return con


def connect(settings: Settings | None = None, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog holds the SQLMesh schemas (``marts.daily_revenue``…)."""
    settings = settings or Settings.from_env()
    if settings.env == "prod":
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
