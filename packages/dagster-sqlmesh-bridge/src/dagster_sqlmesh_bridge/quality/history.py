"""The profile history: one table in the warehouse's own catalog, shared by every run.

Locally that is the warehouse DuckDB file; in production the DuckLake catalog (metadata in
PostgreSQL, data on S3). Every pod of every run therefore reads and extends the same history,
so the anomaly checks warm up once per deployment, not once per pod.

Writes are append-only: a profile is inserted with its run id and a batch id, never updated or
deleted in place, so concurrent writers never conflict (DuckLake lets transactions append to one
table side by side; an UPDATE or DELETE would conflict with them). Readers take, per
(asset, partition), the newest batch: re-profiling a partition supersedes the old profile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import duckdb
import pandas as pd

from dagster_sqlmesh_bridge.quality.grain import DAY, Grain
from dagster_sqlmesh_bridge.quality.profile import (
    ColumnProfile,
    TableProfile,
    asset_key_string,
    is_numeric,
    profile_materialization,
    profile_metadata,
    profile_sql,
)
from dagster_sqlmesh_bridge.timeutil import UTC

SCHEMA = "pipelines_quality"
TABLE = f"{SCHEMA}.profiles"
_COLUMNS = """
    asset_key VARCHAR,
    "partition" VARCHAR,
    profiled_at TIMESTAMPTZ,
    batch_id VARCHAR,
    run_id VARCHAR,
    row_count BIGINT,
    column_index INTEGER,
    "column" VARCHAR,
    "type" VARCHAR,
    null_fraction DOUBLE,
    "distinct" BIGINT,
    "min" VARCHAR,
    "max" VARCHAR,
    mean DOUBLE
"""
# the newest batch of every (asset, partition): what a reader of the history sees
_LATEST = f"""
    SELECT "partition", arg_max(batch_id, profiled_at) AS batch_id
    FROM {TABLE} WHERE asset_key = $asset AND {{where}}
    GROUP BY "partition"
"""
T = TypeVar("T")
Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


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
        return date.fromisoformat(self.partition[:10])

    @classmethod
    def of(cls, profile: TableProfile) -> HistoryPoint:
        """What the history will hold for ``profile`` once it is recorded."""
        columns = {c.name: ColumnHistory(c.null_fraction, c.distinct, c.mean) for c in profile.columns}
        return cls(key_of(profile), profile.row_count, columns)


def key_of(profile: TableProfile) -> str:
    """A partition's key, or for a table profiled whole the moment it was profiled: FULL,
    unique-key and SCD models get one history point per run."""
    return profile.partition or profile.profiled_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: float | str | None) -> str | None:
    return None if value is None else str(value)


def _value(type_name: str, text: str | None) -> float | str | None:
    """A stored min/max back as the profile had it: a number for numeric columns."""
    return float(text) if text is not None and is_numeric(type_name) else text


def _retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Run ``action`` again when another writer won a race (DuckLake transaction conflict,
    two pods creating the table at once, DuckDB's file lock held for a moment)."""
    for attempt in range(attempts):
        try:
            return action()
        except (duckdb.TransactionException, duckdb.CatalogException, duckdb.IOException) as exc:
            text = str(exc).lower()
            transient = any(w in text for w in ("conflict", "lock", "already exists", "retry"))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


class ProfileStore:
    """Profiles kept in ``pipelines_quality.profiles`` of the warehouse, one row per
    (asset, partition, column) and recording.

    Give it a connection (the SQLMesh run's own, or one of checks run alone) or a function that opens
    one; :meth:`session` keeps one connection across many reads and writes.
    """

    def __init__(self, connect: Connect | duckdb.DuckDBPyConnection) -> None:
        self._open: Connect | None = None if isinstance(connect, duckdb.DuckDBPyConnection) else connect
        self._session: duckdb.DuckDBPyConnection | None = (
            connect if isinstance(connect, duckdb.DuckDBPyConnection) else None
        )
        self._ready = False

    @contextmanager
    def session(self) -> Iterator[ProfileStore]:
        """Keep one connection open across several reads and writes (a step checking many
        tables pays for one connection, which on DuckLake means a catalog attach)."""
        if self._session is not None or self._open is None:
            yield self
            return
        with self._open() as con:
            self._session = con
            try:
                yield self
            finally:
                self._session, self._ready = None, False

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._session is not None:
            self._ensure(self._session)
            yield self._session
            return
        assert self._open is not None
        with self._open() as con:
            self._ready = False
            self._ensure(con)
            yield con

    def _ensure(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._ready:
            return

        def create() -> None:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")

        try:  # a read-only reader of an existing history creates nothing
            con.execute(f"SELECT 1 FROM {TABLE} LIMIT 0")
        except duckdb.CatalogException:
            _retry(create)
        self._ready = True

    def record(self, asset_key: str, profiles: Iterable[TableProfile]) -> None:
        """Store profiles; a later recording of the same (asset, partition) supersedes them."""
        self.record_many({asset_key: profiles})

    def record_many(self, profiles: Mapping[str, Iterable[TableProfile]], run_id: str | None = None) -> None:
        """Append the profiles of many assets with one insert (one batch id per profile).

        Rows go in as one DataFrame (pandas comes with SQLMesh); a per-row ``executemany`` cost
        ~1.6 ms per row.
        """
        rows = [
            (asset_key, key_of(p), p.profiled_at, batch, p.row_count, i, c)
            for asset_key, items in profiles.items()
            for p in items
            for batch in (uuid.uuid4().hex,)
            for i, c in enumerate(p.columns)
        ]
        if not rows:
            return
        batch = pd.DataFrame(
            {
                "asset_key": pd.Series([r[0] for r in rows], dtype=object),
                "partition": pd.Series([r[1] for r in rows], dtype=object),
                "profiled_at": pd.to_datetime([r[2] for r in rows], utc=True),
                "batch_id": pd.Series([r[3] for r in rows], dtype=object),
                "run_id": pd.Series([run_id] * len(rows), dtype=object),
                "row_count": pd.array([r[4] for r in rows], dtype="Int64"),
                "column_index": pd.array([r[5] for r in rows], dtype="Int32"),
                "column": pd.Series([r[6].name for r in rows], dtype=object),
                "type": pd.Series([r[6].type for r in rows], dtype=object),
                "null_fraction": pd.array([r[6].null_fraction for r in rows], dtype="Float64"),
                "distinct": pd.array([r[6].distinct for r in rows], dtype="Int64"),
                "min": pd.Series([_text(r[6].min) for r in rows], dtype=object),
                "max": pd.Series([_text(r[6].max) for r in rows], dtype=object),
                "mean": pd.array([r[6].mean for r in rows], dtype="Float64"),
            }
        )
        name = f"new_profiles_{uuid.uuid4().hex[:8]}"
        with self._connect() as con:
            con.register(name, batch)
            try:
                _retry(lambda: con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM {name}"))
            finally:
                con.unregister(name)

    def profiles_of_run(
        self,
        asset_key: str,
        table: str,
        partition_column: str | None,
        run_id: str,
        partitions: Sequence[str] | None,
        grain: Grain = DAY,
    ) -> dict[str, TableProfile] | None:
        """The profiles ``run_id`` recorded for every one of ``partitions`` (its materialization
        profiled them moments ago, with one query), or None when any is missing. Without
        partitions: the run's newest profile of the whole table."""
        keys = sorted(set(partitions or ()))
        where = 'run_id = $run AND list_contains($keys, "partition")' if keys else "run_id = $run"
        newest = "" if keys else 'ORDER BY "partition" DESC LIMIT 1'
        with self._connect() as con:
            rows = con.execute(
                f"""
                WITH latest AS ({_LATEST.format(where=where)}{newest})
                SELECT p."partition", p.row_count, p.profiled_at, p."column", p."type", p.null_fraction,
                       p."distinct", p."min", p."max", p.mean
                FROM {TABLE} AS p JOIN latest USING ("partition", batch_id)
                WHERE p.asset_key = $asset
                ORDER BY p."partition", p.column_index
                """,
                {"asset": asset_key, "run": run_id, **({"keys": keys} if keys else {})},
            ).fetchall()
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            columns.setdefault(row[0], []).append(row)
        if not columns or (keys and sorted(columns) != keys) or any(r[4] is None for r in rows):
            return None
        profiles = {}
        for key, found in columns.items():
            cols = tuple(
                ColumnProfile(c, t, nf, d, _value(t, mn), _value(t, mx), mean)
                for *_, c, t, nf, d, mn, mx, mean in found
            )
            # the query that produced them (the same text: same table, columns and partitions)
            sql, _ = profile_sql(table, [(c.name, c.type) for c in cols], partition_column, keys, grain)
            partition = key if keys else None
            profiles[key] = TableProfile(table, partition, int(found[0][1]), cols, sql, found[0][2])
        return profiles

    def history(self, asset_key: str, *, before: str, limit: int = 56) -> list[HistoryPoint]:
        """The ``limit`` newest partitions strictly before ``before``, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                f"""
                WITH latest AS (
                    {_LATEST.format(where='"partition" < $before')}
                    ORDER BY "partition" DESC LIMIT $limit
                )
                SELECT p."partition", p.row_count, p."column", p.null_fraction, p."distinct", p.mean
                FROM {TABLE} AS p JOIN latest USING ("partition", batch_id)
                WHERE p.asset_key = $asset
                ORDER BY p."partition", p.column_index
                """,
                {"asset": asset_key, "before": before, "limit": limit},
            ).fetchall()
        points: dict[str, HistoryPoint] = {}
        for part, row_count, column, null_fraction, distinct, mean in rows:
            point = points.setdefault(part, HistoryPoint(part, int(row_count), {}))
            point.columns[column] = ColumnHistory(null_fraction, distinct, mean)
        return list(points.values())


def record_profile(
    con: duckdb.DuckDBPyConnection,
    asset_key: Any,
    table: str,
    partition_column: str | None,
    partitions: Sequence[str] | None,
    *,
    store: ProfileStore,
    descriptions: Mapping[str, str] | None = None,
    grain: Grain = DAY,
) -> dict[str, Any]:
    """Profile what a materialization wrote, keep it in the history, return Dagster metadata."""
    profiles = profile_materialization(con, table, partition_column, partitions, grain)
    store.record(asset_key_string(asset_key), profiles)
    return profile_metadata(profiles, descriptions)
