"""Keeping the DuckLake warehouse bounded and whole.

DuckLake never deletes a data file by itself: every restatement or rebuild leaves the old files
on S3 for time travel, so the bucket grows with every run. ``expire_and_clean`` expires snapshots
older than the retention and deletes the files no live snapshot references. ``missing_files``
compares the files the catalog references with what the object store holds, so a file lost from
S3 is named (table and days) instead of failing every later read with an HTTP 404.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb

from pipelines.platform.lake import Lake
from pipelines.platform.postgres import ducklake_metadata_schema
from pipelines.platform.settings import SettingsError

RETENTION_ENV = "PIPELINES_SNAPSHOT_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 7.0
MAX_RUN_ENV = "PIPELINES_MAX_RUN_HOURS"
DEFAULT_MAX_RUN_HOURS = 24.0
CATALOG = "lake"  # the DuckLake catalog's name in pipelines.platform.warehouse and the prod gateway


def _non_negative_from_env(name: str, default: float, unit: str) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise SettingsError(f"{name} must be a number of {unit} >= 0, got {raw!r}")
    return value


def retention_from_env() -> timedelta:
    """``PIPELINES_SNAPSHOT_RETENTION_DAYS`` (default 7): how long old snapshots stay readable."""
    return timedelta(days=_non_negative_from_env(RETENTION_ENV, DEFAULT_RETENTION_DAYS, "days"))


def longest_run_from_env() -> timedelta:
    """``PIPELINES_MAX_RUN_HOURS`` (default 24): the longest a run of this deployment may take, so
    the longest any writer holds files it has not committed yet. 0 only where no run can be in
    flight during maintenance (a stopped deployment, a test)."""
    return timedelta(hours=_non_negative_from_env(MAX_RUN_ENV, DEFAULT_MAX_RUN_HOURS, "hours"))


def check_retention(retention: timedelta, longest_run: timedelta) -> None:
    """Refuse a retention shorter than the longest run: a run in flight has written files no
    snapshot references yet, and cleanup deletes such files once they are older than the retention."""
    if retention < longest_run:
        raise SettingsError(
            f"snapshot retention {retention} is shorter than the longest run allowed ({longest_run}, "
            f"{MAX_RUN_ENV}): maintenance would delete the uncommitted files of a run in flight. "
            f"Use a retention of at least {longest_run}"
        )


@dataclass(frozen=True)
class MaintenanceReport:
    snapshots_before: int
    snapshots_expired: int
    files_deleted: int
    orphans_deleted: int

    def metadata(self) -> dict[str, int]:
        return {
            "snapshots_before": self.snapshots_before,
            "snapshots_expired": self.snapshots_expired,
            "files_deleted": self.files_deleted,
            "orphaned_files_deleted": self.orphans_deleted,
        }


def _interval(retention: timedelta) -> str:
    return f"now() - INTERVAL '{int(retention.total_seconds())} seconds'"


def expire_and_clean(
    con: duckdb.DuckDBPyConnection, retention: timedelta, longest_run: timedelta | None = None
) -> MaintenanceReport:
    """Expire snapshots older than ``retention``, then delete the files only they referenced and
    files no snapshot ever committed (left by killed writers) that are older than ``retention``.

    A writer's files are at most as old as its run when it commits, so a retention of at least
    ``longest_run`` (default: ``PIPELINES_MAX_RUN_HOURS``) never touches a run in flight; a
    shorter one is refused before anything is deleted.
    """
    check_retention(retention, longest_run_from_env() if longest_run is None else longest_run)
    older = _interval(retention)
    before = con.execute(f"SELECT count(*) FROM ducklake_snapshots('{CATALOG}')").fetchone()[0]
    expired = con.execute(f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => {older})").fetchall()
    cleaned = con.execute(f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => {older})").fetchall()
    orphans = con.execute(
        f"CALL ducklake_delete_orphaned_files('{CATALOG}', older_than => {older})"
    ).fetchall()
    return MaintenanceReport(before, len(expired), len(cleaned), len(orphans))


@dataclass(frozen=True)
class MissingFile:
    table: str  # schema.table as the catalog names it (SQLMesh's physical table)
    path: str
    days: tuple[str, ...] = field(default=())


def referenced_files(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every data and delete file the current snapshot reads: full path -> ``schema.table``."""
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [CATALOG]
    ).fetchall()
    files: dict[str, str] = {}
    for schema, table in tables:
        rows = con.execute(
            f"SELECT data_file, delete_file FROM ducklake_list_files('{CATALOG}', ?, schema => ?)",
            [table, schema],
        ).fetchall()
        for data_file, delete_file in rows:
            for path in (data_file, delete_file):
                if path:
                    files[path] = f"{schema}.{table}"
    return files


def _key(lake: Lake, path: str) -> str | None:
    """The lake key of a catalog path, or None when the file lives outside this lake."""
    root = lake.uri.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else None


def unplaceable_files(con: duckdb.DuckDBPyConnection, lake: Lake) -> dict[str, str]:
    """Files the catalog references outside the lake root (path -> ``schema.table``): the lake's
    listing cannot say whether they exist, so they are neither present nor missing."""
    return {path: table for path, table in referenced_files(con).items() if _key(lake, path) is None}


def missing_files(
    con: duckdb.DuckDBPyConnection, lake: Lake, time_columns: Mapping[str, str | None] | None = None
) -> list[MissingFile]:
    """Files under the lake root the catalog references that the object store does not hold
    (never a file outside it: see ``unplaceable_files``), with the days each
    one held when that can be read from the catalog. ``time_columns`` (model -> its time
    column, None for a model without one) names the column; otherwise the table's first DATE
    column is taken."""
    referenced = referenced_files(con)
    present = {obj.key for obj in lake.list("warehouse", hidden=True)}
    lost = [
        (path, table)
        for path, table in referenced.items()
        if (key := _key(lake, path)) is not None and key not in present
    ]
    return [
        MissingFile(table, path, _days_in_file(con, table, path, time_columns))
        for path, table in sorted(lost)
    ]


def _days_in_file(
    con: duckdb.DuckDBPyConnection, table: str, path: str, time_columns: Mapping[str, str | None] | None
) -> tuple[str, ...]:
    """The days a lost file held, from the catalog's column statistics (min/max of the model's
    time column), so repair can restate exactly them. Empty when not derivable."""
    schema, name = table.split(".", 1)
    model = model_of_table(table)
    if time_columns is not None and model in time_columns:
        column = time_columns[model]
    else:
        date_cols = con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
            "AND table_name = ? AND data_type = 'DATE' ORDER BY column_index",
            [CATALOG, schema, name],
        ).fetchall()
        column = date_cols[0][0] if date_cols else None
    if column is None:
        return ()
    bounds = file_column_range(con, path, column)
    if bounds is None:
        return ()
    from datetime import date

    first, last = date.fromisoformat(bounds[0][:10]), date.fromisoformat(bounds[1][:10])
    return tuple((first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1))


def file_column_range(con: duckdb.DuckDBPyConnection, path: str, column: str) -> tuple[str, str] | None:
    """(min, max) of ``column`` in the data file at ``path``, as the catalog's column statistics
    recorded them when the file was written (text); None when the catalog has none."""
    meta = metadata_schema()
    try:
        row = con.execute(
            f"""
            SELECT min(s.min_value), max(s.max_value)
            FROM {meta}.ducklake_data_file f
            JOIN {meta}.ducklake_file_column_stats s USING (data_file_id)
            JOIN {meta}.ducklake_column c ON c.column_id = s.column_id AND c.table_id = f.table_id
            WHERE c.column_name = ? AND c.end_snapshot IS NULL AND ? LIKE '%' || f.path
            """,
            [column, path],
        ).fetchone()
    except duckdb.Error:
        return None
    if not row or row[0] is None or row[1] is None:
        return None
    return str(row[0]), str(row[1])


_PHYSICAL = re.compile(r"^sqlmesh__(?P<schema>\w+?)\.(?P=schema)__(?P<name>\w+?)__\d+$")


def model_of_table(table: str) -> str | None:
    """SQLMesh's physical table (``sqlmesh__marts.marts__daily_revenue__1256577675``) back to its
    model (``marts.daily_revenue``); None for anything else (dev tables, foreign tables)."""
    match = _PHYSICAL.match(table)
    return f"{match['schema']}.{match['name']}" if match else None


def metadata_schema() -> str:
    """The DuckLake catalog's own tables (the spec's ``ducklake_*``), as a qualified schema."""
    return f'__ducklake_metadata_{CATALOG}."{ducklake_metadata_schema()}"'
