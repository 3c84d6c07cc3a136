"""Repairing warehouse tables whose data files were lost from the object store.

A restatement cannot mend such a table by itself: SQLMesh's restatement deletes the interval's
rows first, and DuckLake reads a data file to delete rows from it, so the DELETE fails with the
same HTTP 404 as every read of the lost file (docs/reliability.md). Repair therefore works in two
steps:

1. ``rebuild``: in ONE DuckLake transaction, copy the rows outside the lost time ranges into a
   new table (one range-filtered read per gap, which DuckLake prunes to the files whose column
   statistics overlap it, never the lost ones), drop the damaged table (a catalog change, no
   file read) and rename the copy to its name, partitioning re-applied as the catalog had it.
2. the caller restates exactly the lost days of those models (and, as SQLMesh does, their
   downstream models) through the ordinary ranged run (``pipelines run``'s path), which
   recomputes them from the lake's raw files.

A model without a time column (FULL) needs no rebuild: SQLMesh replaces its table without
reading the old files, so an unpartitioned run of it is the whole repair.

The lost ranges come from the catalog's per-file column statistics of the model's time column,
rounded out to whole days (the Dagster partitions the restatement runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import duckdb

from dagster_sqlmesh_bridge import ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.identifiers import safe_identifier
from pipelines.platform import maintenance
from pipelines.platform.lake import Lake

CATALOG = maintenance.CATALOG
REPAIR_SUFFIX = "__repair"
_TRANSFORMS = {"identity", "year", "month", "day", "hour"}


class RepairError(RuntimeError):
    """The damage cannot be repaired automatically (the message says why and what to do)."""


@dataclass(frozen=True)
class DayRange:
    first: date
    last: date  # inclusive

    def __str__(self) -> str:
        return self.first.isoformat() if self.first == self.last else f"{self.first} .. {self.last}"


@dataclass(frozen=True)
class TableDamage:
    """One physical table with lost files, and what repairing it means."""

    table: str  # schema.table, SQLMesh's physical table
    model: str  # schema.name of the SQLMesh model
    files: tuple[str, ...]
    time_column: str | None  # None: not time-partitioned, the model is rebuilt whole
    ranges: tuple[DayRange, ...] = field(default=())

    def describe(self) -> str:
        what = ", ".join(map(str, self.ranges)) if self.time_column else "whole table (no time column)"
        return f"{self.model} ({self.table}): {len(self.files)} file(s) lost; recompute {what}"


def merge_ranges(ranges: Iterable[DayRange]) -> tuple[DayRange, ...]:
    """Overlapping or adjacent day ranges joined, in order."""
    merged: list[DayRange] = []
    for r in sorted(ranges, key=lambda r: r.first):
        if merged and r.first <= merged[-1].last + timedelta(days=1):
            merged[-1] = DayRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def _models_by_table(project: ProjectInfo) -> dict[str, ModelInfo]:
    return {f"{m.schema}.{m.table}": m for m in project.internal_models}


def time_columns(project: ProjectInfo) -> dict[str, str | None]:
    """Every model (``schema.name``) -> its time column, None when it has none (FULL, VIEW)."""
    models = project.internal_models
    return {f"{m.schema}.{m.table}": m.time_column if m.time_partitioned else None for m in models}


def find_damage(con: duckdb.DuckDBPyConnection, lake: Lake, project: ProjectInfo) -> list[TableDamage]:
    """Every physical table of a current model with files gone from the lake, with its lost days.

    A lost delete file loses its data file's rows as well (DuckLake cannot read the data file
    without it), so its data file's range counts. Raises ``RepairError`` when a table is not a
    model's, a lost file's days cannot be read from the catalog, or the table also references
    files outside the lake root (whether those exist cannot be told, so the table is left alone).
    """
    lost = {f.path for f in maintenance.missing_files(con, lake, time_columns(project))}
    if not lost:
        return []
    models = _models_by_table(project)
    unplaceable = maintenance.unplaceable_files(con, lake)
    by_table: dict[str, set[str]] = {}
    for path, table in maintenance.referenced_files(con).items():
        if path in lost:
            by_table.setdefault(table, set()).add(path)
    damage = []
    for table, paths in sorted(by_table.items()):
        outside = sorted(p for p, t in unplaceable.items() if t == table)
        if outside:
            raise RepairError(
                f"{table}: files lost ({', '.join(sorted(paths))}), and the table also references "
                f"file(s) outside the lake root {lake.uri} ({', '.join(outside)}) that repair cannot "
                "place, so it cannot tell which rows are lost; the table is left as it is: restore "
                "the lost files from a backup, or restate the model by hand"
            )
        model_name = maintenance.model_of_table(table)
        model = models.get(model_name or "")
        if model is None:
            raise RepairError(
                f"{table}: files lost ({', '.join(sorted(paths))}) but the table is no current "
                "model's physical table; restore the files from a backup or drop the table"
            )
        time_column = model.time_column if model.time_partitioned else None
        ranges: tuple[DayRange, ...] = ()
        if time_column and model.interval_unit not in (None, "day"):
            raise RepairError(
                f"{model_name}: files lost ({', '.join(sorted(paths))}); repair restates whole days "
                f"and this model's intervals are by {model.interval_unit}: restate its days by hand"
            )
        if time_column:
            data_files = _data_files_of(con, table, paths)
            ranges = merge_ranges(_file_days(con, table, f, time_column) for f in sorted(data_files))
        damage.append(TableDamage(table, model_name or table, tuple(sorted(paths)), time_column, ranges))
    return damage


def _data_files_of(con: duckdb.DuckDBPyConnection, table: str, paths: set[str]) -> set[str]:
    """The data files whose rows are lost: the lost data files and those of lost delete files."""
    schema, name = _split(table)
    rows = con.execute(
        f"SELECT data_file, delete_file FROM ducklake_list_files('{CATALOG}', ?, schema => ?)", [name, schema]
    ).fetchall()
    return {data for data, delete in rows if data in paths or (delete and delete in paths)}


def _file_days(con: duckdb.DuckDBPyConnection, table: str, path: str, column: str) -> DayRange:
    bounds = maintenance.file_column_range(con, path, column)
    if bounds is None:
        raise RepairError(
            f"{table}: the catalog has no statistics of {column} for lost file {path}; "
            "restate the model's whole history instead (pipelines run --start <first day> --select ...)"
        )
    try:
        return DayRange(date.fromisoformat(bounds[0][:10]), date.fromisoformat(bounds[1][:10]))
    except ValueError as exc:
        raise RepairError(f"{table}: {column} values {bounds} are not dates or timestamps") from exc


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".", 1)
    return safe_identifier(schema, "schema"), safe_identifier(name, "table")


def _columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [CATALOG, schema, name],
    ).fetchall()
    return [(safe_identifier(c, "column"), t) for c, t in rows]


def _partitioning(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[str]:
    """The table's current partition keys as ``SET PARTITIONED BY`` terms (``order_date``,
    ``year(ts)``), read from DuckLake's catalog tables (the spec's partition tables)."""
    meta = maintenance.metadata_schema()
    rows = con.execute(
        f"""
        SELECT c.column_name, pc.transform
        FROM {meta}.ducklake_table t
        JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        JOIN {meta}.ducklake_partition_info p ON p.table_id = t.table_id AND p.end_snapshot IS NULL
        JOIN {meta}.ducklake_partition_column pc
          ON pc.partition_id = p.partition_id AND pc.table_id = t.table_id
        JOIN {meta}.ducklake_column c
          ON c.column_id = pc.column_id AND c.table_id = t.table_id AND c.end_snapshot IS NULL
        WHERE t.end_snapshot IS NULL AND s.schema_name = ? AND t.table_name = ?
        ORDER BY pc.partition_key_index
        """,
        [schema, name],
    ).fetchall()
    terms = []
    for column, transform in rows:
        column = safe_identifier(column, "partition column")
        if transform not in _TRANSFORMS:
            raise RepairError(f"{schema}.{name}: unknown partition transform {transform!r}")
        terms.append(f'"{column}"' if transform == "identity" else f'{transform}("{column}")')
    return terms


def _gaps(column: str, ranges: Sequence[DayRange]) -> list[str]:
    """WHERE clauses selecting every row outside ``ranges``, one per gap: each is a plain range
    on the time column, which DuckLake answers from the files whose statistics overlap it."""
    col = f'"{column}"'
    bounds = [(r.first, r.last + timedelta(days=1)) for r in ranges]
    clauses = [f"{col} < DATE '{bounds[0][0]}'"]
    for (_, gap_start), (gap_end, _) in zip(bounds, bounds[1:], strict=False):
        clauses.append(f"{col} >= DATE '{gap_start}' AND {col} < DATE '{gap_end}'")
    clauses.append(f"{col} >= DATE '{bounds[-1][1]}'")
    return clauses


def rebuild(con: duckdb.DuckDBPyConnection, damage: TableDamage) -> int:
    """Replace the damaged table by a copy of its rows outside the lost ranges, in one
    transaction (all or nothing; a concurrent writer of the table makes it conflict and roll
    back). Returns the rows kept. Never reads a lost file."""
    if not damage.time_column or not damage.ranges:
        raise RepairError(f"{damage.table}: no lost time range; rebuild the model instead")
    schema, name = _split(damage.table)
    copy = safe_identifier(name + REPAIR_SUFFIX, "repair table")
    columns = _columns(con, schema, name)
    if not columns:
        raise RepairError(f"{damage.table}: no such table in the catalog")
    partitioning = _partitioning(con, schema, name)
    where = _gaps(damage.time_column, damage.ranges)
    target, source = f'"{schema}"."{copy}"', f'"{schema}"."{name}"'
    con.execute("BEGIN")
    try:
        con.execute(f"DROP TABLE IF EXISTS {target}")
        con.execute(f"CREATE TABLE {target} ({', '.join(f'{chr(34)}{c}{chr(34)} {t}' for c, t in columns)})")
        if partitioning:
            con.execute(f"ALTER TABLE {target} SET PARTITIONED BY ({', '.join(partitioning)})")
        kept = 0
        for clause in where:
            kept += con.execute(f"INSERT INTO {target} SELECT * FROM {source} WHERE {clause}").fetchone()[0]
        con.execute(f"DROP TABLE {source}")
        con.execute(f'ALTER TABLE {target} RENAME TO "{name}"')
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return kept


def restatements(
    damage: Sequence[TableDamage], project: ProjectInfo
) -> list[tuple[DayRange | None, list[str]]]:
    """The runs that recompute the damage: one ranged run per distinct day range, naming the
    models lost in it, and one unpartitioned run (``None``) rebuilding the damaged models that
    have no time column (SQLMesh replaces such a table without reading its old files).

    The unpartitioned run goes first, as time models may read those tables (a join to a
    dimension), unless one of them reads a damaged time model: then it goes last."""
    runs: dict[DayRange, set[str]] = {}
    for d in damage:
        for r in d.ranges:
            runs.setdefault(r, set()).add(d.model)
    planned: list[tuple[DayRange | None, list[str]]] = [
        (r, sorted(models)) for r, models in sorted(runs.items(), key=lambda x: (x[0].first, x[0].last))
    ]
    whole = sorted({d.model for d in damage if not d.time_column})
    if not whole:
        return planned
    damaged_time_models = {d.model for d in damage if d.time_column}
    if _upstream(project, whole) & damaged_time_models:
        return [*planned, (None, whole)]
    return [(None, whole), *planned]


def restated_models(project: ProjectInfo, names: Iterable[str]) -> list[str]:
    """The fqns of the models ``names`` (``schema.name``) and every model downstream of them
    that SQLMesh lets restate: what a restatement of ``names`` recomputes."""
    wanted = set(names)
    affected = {m.fqn for m in project.models.values() if f"{m.schema}.{m.table}" in wanted}
    grew = True
    while grew:  # a small graph: repeat until no model joins (embedded models pass it on)
        grew = False
        for model in project.models.values():
            if model.fqn not in affected and affected.intersection(model.depends_on):
                affected.add(model.fqn)
                grew = True
    return [m.fqn for m in project.topological(affected) if m.restatable]


def windows_not_done(
    damage: Sequence[TableDamage], project: ProjectInfo
) -> list[tuple[list[str], datetime, datetime]]:
    """(model fqns, start, end) to mark not done in SQLMesh's state before the rebuild removes
    their rows: each lost day range of the rebuilt models and of their downstream models."""
    windows = []
    for days, models in restatements(damage, project):
        if days is None:  # a FULL model: not rebuilt, its lost file is found again until its run
            continue
        start = datetime.combine(days.first, time.min, UTC)
        end = datetime.combine(days.last + timedelta(days=1), time.min, UTC)
        windows.append((restated_models(project, models), start, end))
    return windows


def _upstream(project: ProjectInfo, names: Iterable[str]) -> set[str]:
    """Every model ``names`` read, directly or not (``schema.name``)."""
    by_fqn = {m.fqn: m for m in project.models.values()}
    short = {m.fqn: f"{m.schema}.{m.table}" for m in project.models.values()}
    todo = [m.fqn for m in project.models.values() if f"{m.schema}.{m.table}" in set(names)]
    seen: set[str] = set()
    while todo:
        for parent in by_fqn[todo.pop()].depends_on:
            if parent in by_fqn and parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return {short[f] for f in seen}


def selection_string(keys: Iterable[str]) -> str:
    """A Dagster selection naming exactly ``keys`` (``marts/daily_revenue``), for ``pipelines run``."""
    return " or ".join(f'key:"{k}"' for k in sorted(set(keys)))
