"""Table profiles computed by one aggregate query inside DuckDB, and their history.

A profile is what the anomaly checks compare day to day: row count, and per column the null
fraction, an approximate distinct count, min/max and the mean. The query runs in DuckDB and only
the aggregates (one row per partition) come back to Python, so profiling a table costs one scan and
almost no Python memory whatever its size.
"""

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa

from pipelines.identifiers import safe_identifier, safe_partition_key

HISTORY_FILE = "quality_history.duckdb"

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
    """``schema.table`` (or ``catalog.schema.table``) validated part by part and quoted."""
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"invalid table name {table!r}")
    return ".".join(quote(safe_identifier(p, "table name part")) for p in parts)


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
        """Dagster metadata: the standard row count and column schema, plus the profile as JSON."""
        return {
            "dagster/row_count": dg.MetadataValue.int(self.row_count),
            "dagster/column_schema": self.column_schema(descriptions),
            "profile": dg.MetadataValue.json(self.as_dict()),
        }


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


def partition_filter(partition_column: str, first: str, last: str) -> str:
    """A range predicate on the partition column (range, so DuckDB can skip row groups)."""
    col = quote(safe_identifier(partition_column, "partition column"))
    end = date.fromisoformat(safe_partition_key(last)) + timedelta(days=1)
    return f"{col} >= DATE '{safe_partition_key(first)}' AND {col} < DATE '{end.isoformat()}'"


def profile_sql(
    table: str,
    columns: Sequence[tuple[str, str]],
    partition_column: str | None,
    partitions: Sequence[str],
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
        keys = sorted(safe_partition_key(p) for p in partitions)
        group = f"CAST({quote(partition_column)} AS DATE) AS partition_date,\n  "
        where = f"\nWHERE {partition_filter(partition_column, keys[0], keys[-1])}\nGROUP BY 1"
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
    con: duckdb.DuckDBPyConnection, table: str, partition_column: str, partitions: Iterable[str]
) -> dict[str, TableProfile]:
    """Profiles of several daily partitions from one ``GROUP BY`` query (empty ones included)."""
    keys = sorted({safe_partition_key(p) for p in partitions})
    if not keys:
        return {}
    columns = describe(con, table)
    if partition_column not in {c for c, _ in columns}:
        raise ValueError(f"{table} has no partition column {partition_column!r}")
    sql, layout = profile_sql(table, columns, partition_column, keys)
    rows = {r[0].isoformat(): r[1:] for r in con.execute(sql).fetchall()}
    return {k: _profile_from_row(table, k, columns, layout, rows.get(k), sql) for k in keys}


def profile_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    partition_column: str | None,
    partition: str | None,
) -> TableProfile:
    """Profile one partition of ``table`` (or all of it when ``partition`` is None)."""
    if partition_column and partition:
        return profile_partitions(con, table, partition_column, [partition])[partition]
    columns = describe(con, table)
    sql, layout = profile_sql(table, columns, None, [])
    row = con.execute(sql).fetchone()
    return _profile_from_row(table, None, columns, layout, row, sql)


def latest_partition(con: duckdb.DuckDBPyConnection, table: str, partition_column: str) -> str | None:
    """The newest day present in the table, the partition to check when a run names none."""
    col = quote(safe_identifier(partition_column, "partition column"))
    row = con.execute(f"SELECT CAST(max({col}) AS DATE) FROM {table_sql(table)}").fetchone()
    return row[0].isoformat() if row and row[0] is not None else None


@dataclass(frozen=True)
class ColumnHistory:
    null_fraction: float | None
    distinct: int | None
    mean: float | None


@dataclass(frozen=True)
class HistoryPoint:
    partition: str
    row_count: int
    columns: dict[str, ColumnHistory]

    @property
    def day(self) -> date:
        return date.fromisoformat(self.partition)

    @classmethod
    def of(cls, profile: TableProfile) -> "HistoryPoint":
        """What the history will hold for ``profile`` once it is recorded."""
        columns = {c.name: ColumnHistory(c.null_fraction, c.distinct, c.mean) for c in profile.columns}
        return cls(ProfileStore.key_of(profile), profile.row_count, columns)


def _text(value: float | str | None) -> str | None:
    return None if value is None else str(value)


def _value(type_name: str, text: str | None) -> float | str | None:
    """A stored min/max back as the profile had it: a number for numeric columns."""
    return float(text) if text is not None and is_numeric(type_name) else text


class ProfileStore:
    """Profiles kept in a DuckDB file of their own, one row per (asset, partition, column).

    The file is opened for each call and closed right after, so concurrent check steps only
    wait on each other for milliseconds (with a retry on DuckDB's file lock).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._session: duckdb.DuckDBPyConnection | None = None

    @contextmanager
    def session(self) -> Iterator["ProfileStore"]:
        """Keep the file open across several reads and writes (a step checking many tables):
        each open and close of a DuckDB file costs ~25 ms."""
        with self._connect() as con:
            self._session = con
            try:
                yield self
            finally:
                self._session = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> "ProfileStore":
        return cls(Path(data_dir) / HISTORY_FILE)

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._session is not None:
            yield self._session
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(40):
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or attempt == 39:
                    raise
                time.sleep(0.05 * (attempt + 1))
        try:
            con.execute(
                """
                CREATE TABLE IF NOT EXISTS profiles (
                    asset_key VARCHAR NOT NULL,
                    "partition" VARCHAR NOT NULL,
                    profiled_at TIMESTAMPTZ NOT NULL,
                    row_count BIGINT NOT NULL,
                    "column" VARCHAR NOT NULL,
                    null_fraction DOUBLE,
                    "distinct" BIGINT,
                    "min" VARCHAR,
                    "max" VARCHAR,
                    mean DOUBLE,
                    run_id VARCHAR,
                    "type" VARCHAR
                )
                """
            )
            # files from before run_id/type (which let a check step of the same run reuse a
            # profile) get them; their stddev column, no longer computed, stays NULL from now on
            con.execute("ALTER TABLE profiles ADD COLUMN IF NOT EXISTS run_id VARCHAR")
            con.execute('ALTER TABLE profiles ADD COLUMN IF NOT EXISTS "type" VARCHAR')
            yield con
        finally:
            con.close()

    @staticmethod
    def key_of(profile: TableProfile) -> str:
        """Unpartitioned tables are kept once per profiling day, so they get a history too."""
        return profile.partition or profile.profiled_at.date().isoformat()

    def record(self, asset_key: str, profiles: Iterable[TableProfile]) -> None:
        """Store profiles, replacing any earlier profile of the same (asset, partition)."""
        self.record_many({asset_key: profiles})

    def record_many(self, profiles: Mapping[str, Iterable[TableProfile]], run_id: str | None = None) -> None:
        """Store the profiles of many assets in one transaction (one open of the file per run).

        Rows go in as one Arrow table: a per-row ``executemany`` cost ~1.6 ms per row.
        """
        rows = [
            (asset_key, self.key_of(p), p.profiled_at, p.row_count, c)
            for asset_key, items in profiles.items()
            for p in items
            for c in p.columns
        ]
        if not rows:
            return
        batch = pa.table(
            {
                "asset_key": [r[0] for r in rows],
                "partition": [r[1] for r in rows],
                "profiled_at": pa.array([r[2] for r in rows], type=pa.timestamp("us", tz="UTC")),
                "row_count": pa.array([r[3] for r in rows], type=pa.int64()),
                "column": [r[4].name for r in rows],
                "null_fraction": pa.array([r[4].null_fraction for r in rows], type=pa.float64()),
                "distinct": pa.array([r[4].distinct for r in rows], type=pa.int64()),
                "min": pa.array([_text(r[4].min) for r in rows], type=pa.string()),
                "max": pa.array([_text(r[4].max) for r in rows], type=pa.string()),
                "mean": pa.array([r[4].mean for r in rows], type=pa.float64()),
                "run_id": pa.array([run_id] * len(rows), type=pa.string()),
                "type": [r[4].type for r in rows],
            }
        )
        with self._connect() as con:
            con.register("new_profiles", batch)
            con.execute("BEGIN")
            con.execute(
                'DELETE FROM profiles USING (SELECT DISTINCT asset_key, "partition" FROM new_profiles) AS n '
                'WHERE profiles.asset_key = n.asset_key AND profiles."partition" = n."partition"'
            )
            con.execute("INSERT INTO profiles BY NAME SELECT * FROM new_profiles")
            con.execute("COMMIT")

    def profiles_of_run(
        self, asset_key: str, table: str, partition_column: str, run_id: str, partitions: Sequence[str]
    ) -> dict[str, TableProfile] | None:
        """The profiles ``run_id`` recorded for every one of ``partitions`` (its materialization
        profiled them moments ago, with one query), or None when any is missing."""
        keys = sorted({safe_partition_key(p) for p in partitions})
        with self._connect() as con:
            rows = con.execute(
                """
                SELECT "partition", row_count, profiled_at, "column", "type", null_fraction,
                       "distinct", "min", "max", mean
                FROM profiles WHERE asset_key = ? AND run_id = ? AND list_contains(?, "partition")
                ORDER BY "partition", rowid
                """,
                [asset_key, run_id, keys],
            ).fetchall()
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            columns.setdefault(row[0], []).append(row)
        if sorted(columns) != keys or any(r[4] is None for r in rows):
            return None
        profiles = {}
        for key, found in columns.items():
            cols = tuple(
                ColumnProfile(c, t, nf, d, _value(t, mn), _value(t, mx), mean)
                for *_, c, t, nf, d, mn, mx, mean in found
            )
            # the query that produced them (the same text: same table, columns and days)
            sql, _ = profile_sql(table, [(c.name, c.type) for c in cols], partition_column, keys)
            profiles[key] = TableProfile(table, key, int(found[0][1]), cols, sql, found[0][2])
        return profiles

    def history(self, asset_key: str, *, before: str, limit: int = 56) -> list[HistoryPoint]:
        """The ``limit`` newest partitions strictly before ``before``, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                """
                WITH recent AS (
                    SELECT DISTINCT "partition" FROM profiles
                    WHERE asset_key = ? AND "partition" < ?
                    ORDER BY "partition" DESC LIMIT ?
                )
                SELECT p."partition", p.row_count, p."column", p.null_fraction, p."distinct",
                       p.mean
                FROM profiles AS p JOIN recent USING ("partition")
                WHERE p.asset_key = ?
                ORDER BY p."partition"
                """,
                [asset_key, before, limit, asset_key],
            ).fetchall()
        points: dict[str, HistoryPoint] = {}
        for part, row_count, column, null_fraction, distinct, mean in rows:
            point = points.setdefault(part, HistoryPoint(part, int(row_count), {}))
            point.columns[column] = ColumnHistory(null_fraction, distinct, mean)
        return list(points.values())


def asset_key_string(asset_key: dg.AssetKey | Sequence[str] | str) -> str:
    """``marts/daily_revenue`` for any spelling of an asset key."""
    if isinstance(asset_key, dg.AssetKey):
        return asset_key.to_user_string()
    if isinstance(asset_key, str):
        return asset_key
    return "/".join(asset_key)


def profile_materialization(
    con: duckdb.DuckDBPyConnection, table: str, partition_column: str | None, partitions: Sequence[str] | None
) -> list[TableProfile]:
    """What a materialization wrote: one profile per partition (one query), or of the whole table."""
    if partition_column and partitions:
        return list(profile_partitions(con, table, partition_column, partitions).values())
    return [profile_table(con, table, None, None)]


def profile_metadata(
    profiles: Sequence[TableProfile], descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Dagster metadata: ``dagster/row_count`` (the total), ``dagster/column_schema`` (for the
    schema-change check) and the profile JSON."""
    if len(profiles) == 1:
        return profiles[0].to_metadata(descriptions)
    return {
        "dagster/row_count": dg.MetadataValue.int(sum(p.row_count for p in profiles)),
        "dagster/column_schema": profiles[-1].column_schema(descriptions),
        "profile": dg.MetadataValue.json({ProfileStore.key_of(p): p.as_dict() for p in profiles}),
    }


def record_profile(
    con: duckdb.DuckDBPyConnection,
    asset_key: dg.AssetKey | Sequence[str] | str,
    table: str,
    partition_column: str | None,
    partitions: Sequence[str] | None,
    *,
    store: ProfileStore,
    descriptions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Profile what a materialization wrote, keep it in the history, return Dagster metadata."""
    profiles = profile_materialization(con, table, partition_column, partitions)
    store.record(asset_key_string(asset_key), profiles)
    return profile_metadata(profiles, descriptions)
