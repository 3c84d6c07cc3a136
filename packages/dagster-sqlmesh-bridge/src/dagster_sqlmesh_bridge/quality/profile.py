"""Table profiles computed by one aggregate query inside DuckDB, and their history.

A profile is what the anomaly checks compare day to day: row count, and per column the null
fraction, an approximate distinct count, min/max and the mean. The query runs in DuckDB and only
the aggregates (one row per partition) come back to Python, so profiling a table costs one scan and
almost no Python memory whatever its size. The history of profiles is in ``history``.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb
from sqlglot import exp, parse_one
from sqlglot.errors import ParseError

from dagster_sqlmesh_bridge.identifiers import safe_identifier
from dagster_sqlmesh_bridge.quality.grain import DAY, Grain
from dagster_sqlmesh_bridge.timeutil import UTC

_NUMERIC = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "REAL",
    "DOUBLE",
}
_TEMPORAL = {
    "DATE",
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "TIME",
}


def quote(name: str) -> str:
    """Quote a column name read from the catalog (it may hold any character)."""
    return '"' + name.replace('"', '""') + '"'


def table_sql(table: str) -> str:
    """A table reference (``schema.table``, ``"catalog"."my schema"."my.table"``) parsed as
    SQL and quoted part by part. Quoted parts are taken as they are (rules carry the names
    SQLMesh parsed, ``ModelInfo.sql_name``); an unquoted part, as a person types it, must be a
    plain identifier. Anything else than one table reference is refused."""
    try:
        parsed = parse_one(table, into=exp.Table, dialect="duckdb") if isinstance(table, str) else None
    except ParseError:
        parsed = None
    args = parsed.args if parsed is not None else {}
    given = [args[k] for k in ("catalog", "db", "this") if args.get(k) is not None]
    extra = any(v for k, v in args.items() if k not in ("catalog", "db", "this"))
    if not given or extra or not all(isinstance(p, exp.Identifier) for p in given):
        raise ValueError(f"invalid table name {table!r}")
    return ".".join(quote(p.name if p.quoted else safe_identifier(p.name, "table name part")) for p in given)


def is_numeric(type_name: str) -> bool:
    return type_name in _NUMERIC or type_name.startswith("DECIMAL")


def is_temporal(type_name: str) -> bool:
    return type_name in _TEMPORAL


def _is_nested(type_name: str) -> bool:
    return type_name.endswith("]") or type_name.startswith(("STRUCT", "MAP", "UNION"))


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: str
    null_fraction: float | None
    distinct: int | None = None
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None


@dataclass(frozen=True)
class TableProfile:
    table: str
    partition: str | None
    row_count: int
    columns: tuple[ColumnProfile, ...]
    sql: str
    profiled_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.table} has no column {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "partition": self.partition,
            "row_count": self.row_count,
            "profiled_at": self.profiled_at.isoformat(),
            "columns": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.columns},
        }

    def column_schema(self, descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
        """The columns as the warehouse really has them (what the schema-change check compares)."""
        descriptions = descriptions or {}
        return dg.TableSchema(
            columns=[
                dg.TableColumn(c.name, c.type, description=descriptions.get(c.name)) for c in self.columns
            ]
        )

    def to_metadata(self, descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Dagster metadata: the standard row count and column schema, plus the profile's summary."""
        return profile_metadata([self], descriptions)


def describe(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(column, type) pairs of ``table``, in table order."""
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table_sql(table)}").fetchall()]


def _column_stats(name: str, type_name: str) -> list[tuple[str, str]]:
    """(stat, SQL expression) pairs computed for one column."""
    col = quote(name)
    stats = [("non_null", f"count({col})")]
    if not _is_nested(type_name):
        stats.append(("distinct", f"approx_count_distinct({col})"))
    if is_numeric(type_name):
        stats += [
            ("min", f"CAST(min({col}) AS DOUBLE)"),
            ("max", f"CAST(max({col}) AS DOUBLE)"),
            # no stddev: no check uses it and it cost a third of the whole query
            ("mean", f"CAST(avg({col}) AS DOUBLE)"),
        ]
    elif is_temporal(type_name):
        stats += [("min", f"CAST(min({col}) AS VARCHAR)"), ("max", f"CAST(max({col}) AS VARCHAR)")]
    return stats


def partition_expr(partition_column: str, type_name: str | None = None) -> str:
    """The partition column as SQL; a string time column (``time_column (ds, '%Y-%m-%d')``) is
    read as a timestamp, so it compares with the partition bounds."""
    col = quote(partition_column)  # SQLMesh's parsed time column: quoted, any character
    if type_name and type_name.upper().split("(")[0] in ("VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"):
        return f"TRY_CAST({col} AS TIMESTAMP)"
    return col


def partition_filter(
    partition_column: str, first: str, last: str, grain: Grain = DAY, type_name: str | None = None
) -> str:
    """A range predicate on the partition column (range, so DuckDB can skip row groups)."""
    col = partition_expr(partition_column, type_name)
    start, end = grain.parse(first), grain.next(grain.parse(last))
    return f"{col} >= {grain.literal(start)} AND {col} < {grain.literal(end)}"


def profile_sql(
    table: str,
    columns: Sequence[tuple[str, str]],
    partition_column: str | None,
    partitions: Sequence[str],
    grain: Grain = DAY,
) -> tuple[str, list[tuple[int, str]]]:
    """The single aggregate query, and which output position holds which (column, stat)."""
    selects = ["count(*) AS row_count"]
    layout: list[tuple[int, str]] = []
    for i, (name, type_name) in enumerate(columns):
        for stat, expr in _column_stats(name, type_name):
            selects.append(f"{expr} AS c{i}_{stat}")
            layout.append((i, stat))
    group = ""
    where = ""
    if partition_column and partitions:
        keys = sorted(partitions, key=grain.parse)
        type_name = dict(columns).get(partition_column)
        column = partition_expr(partition_column, type_name)
        group = f"{grain.bucket_sql(column)} AS partition_start,\n  "
        bounds = partition_filter(partition_column, keys[0], keys[-1], grain, type_name)
        where = f"\nWHERE {bounds}\nGROUP BY 1"
    body = ",\n  ".join(selects)
    sql = f"SELECT\n  {group}{body}\nFROM {table_sql(table)}{where}"
    return sql, layout


def _profile_from_row(
    table: str,
    partition: str | None,
    columns: Sequence[tuple[str, str]],
    layout: Sequence[tuple[int, str]],
    values: Sequence[Any] | None,
    sql: str,
) -> TableProfile:
    row_count = int(values[0]) if values else 0
    stats: list[dict[str, Any]] = [{} for _ in columns]
    if values:
        for (i, stat), value in zip(layout, values[1:], strict=True):
            stats[i][stat] = value
    profiles = []
    for (name, type_name), s in zip(columns, stats, strict=True):
        null_fraction = None if row_count == 0 else 1.0 - int(s.get("non_null", 0)) / row_count
        distinct = s.get("distinct")
        profiles.append(
            ColumnProfile(
                name=name,
                type=type_name,
                null_fraction=null_fraction,
                distinct=None if distinct is None else int(distinct),
                min=s.get("min"),
                max=s.get("max"),
                mean=s.get("mean"),
            )
        )
    return TableProfile(table, partition, row_count, tuple(profiles), sql)


def profile_partitions(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition_column: str,
    partitions: Iterable[str],
    grain: Grain = DAY,
) -> dict[str, TableProfile]:
    """Profiles of several partitions from one ``GROUP BY`` query (empty ones included)."""
    keys = sorted({grain.key(grain.parse(p)) for p in partitions}, key=grain.parse)
    if not keys:
        return {}
    columns = describe(con, table)
    if partition_column not in {c for c, _ in columns}:
        raise ValueError(f"{table} has no partition column {partition_column!r}")
    sql, layout = profile_sql(table, columns, partition_column, keys, grain)
    rows = {grain.key(r[0]): r[1:] for r in con.execute(sql).fetchall() if r[0] is not None}
    return {k: _profile_from_row(table, k, columns, layout, rows.get(k), sql) for k in keys}


def profile_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition_column: str | None,
    partition: str | None,
    grain: Grain = DAY,
) -> TableProfile:
    """Profile one partition of ``table`` (or all of it when ``partition`` is None)."""
    if partition_column and partition:
        return profile_partitions(con, table, partition_column, [partition], grain)[partition]
    columns = describe(con, table)
    sql, layout = profile_sql(table, columns, None, [])
    row = con.execute(sql).fetchone()
    return _profile_from_row(table, None, columns, layout, row, sql)


def latest_partition(
    con: duckdb.DuckDBPyConnection, table: str, partition_column: str, grain: Grain = DAY
) -> str | None:
    """The newest partition present in the table, the one to check when a run names none."""
    col = quote(partition_column)
    row = con.execute(f"SELECT {grain.bucket_sql(f'max({col})')} FROM {table_sql(table)}").fetchone()
    return grain.key(row[0]) if row and row[0] is not None else None


def asset_key_string(asset_key: dg.AssetKey | Sequence[str] | str) -> str:
    """``marts/daily_revenue`` for any spelling of an asset key."""
    if isinstance(asset_key, dg.AssetKey):
        return asset_key.to_user_string()
    if isinstance(asset_key, str):
        return asset_key
    return "/".join(asset_key)


def profile_materialization(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition_column: str | None,
    partitions: Sequence[str] | None,
    grain: Grain = DAY,
) -> list[TableProfile]:
    """What a materialization wrote: one profile per partition (one query), or of the whole table."""
    if partition_column and partitions:
        return list(profile_partitions(con, table, partition_column, partitions, grain).values())
    return [profile_table(con, table, None, None)]


def _summary(profiles: Sequence[TableProfile]) -> dict[str, Any]:
    """The figures of a whole run in one constant-size record: totals, per column the null
    fraction over all rows and the extremes. Per-partition figures stay in the history table."""
    total = sum(p.row_count for p in profiles)
    columns: dict[str, dict[str, Any]] = {}
    for column in profiles[-1].columns:
        found = [(p.row_count, c) for p in profiles for c in p.columns if c.name == column.name]
        nulls = sum(n * c.null_fraction for n, c in found if c.null_fraction is not None)
        lows = [c.min for _, c in found if c.min is not None]
        highs = [c.max for _, c in found if c.max is not None]
        columns[column.name] = {
            "type": column.type,
            "null_fraction": round(nulls / total, 6) if total else None,
            "min": min(lows) if lows else None,
            "max": max(highs) if highs else None,
        }
    keys = [p.partition for p in profiles if p.partition]
    return {
        "partitions": len(keys),
        "first_partition": min(keys) if keys else None,
        "last_partition": max(keys) if keys else None,
        "row_count": total,
        "columns": columns,
        "history": "pipelines_quality.profiles (one row per partition and column)",
    }


def profile_metadata(
    profiles: Sequence[TableProfile], descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Dagster metadata of the same size whatever the run's range: ``dagster/row_count`` (the
    run's total), ``dagster/column_schema`` (for the schema-change check) and one summary.

    Dagster copies a ranged run's metadata onto the materialization of every partition, so
    anything listing partitions here would grow with the square of a backfill's length."""
    return {
        "dagster/row_count": dg.MetadataValue.int(sum(p.row_count for p in profiles)),
        "dagster/column_schema": profiles[-1].column_schema(descriptions),
        "profile": dg.MetadataValue.json(_summary(profiles)),
    }
