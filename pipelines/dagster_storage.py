"""Dagster's local SQLite event log, keeping its connections open between events.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine and a new SQLite connection for
every write; a SQLMesh run that reports 50 models x 7 days writes ~1,000 events, each touching the
run's database and the index database, so opening connections was a third of the whole run
(bench/bench_engine.py; docs/benchmarks.md). This subclass keeps one engine with one pooled
connection per database file and changes nothing else: same files, same schema, same locking
(SQLite's own, plus Dagster's per-storage thread lock held for every use of a connection).

It also writes the batches Dagster groups (``store_event_batch``; Dagster's SQLite storage writes
them one event at a time): 2.0x -> 1.55x of bare SQLMesh for the run above.

It is the local default only (``dagster.yaml``); production uses PostgreSQL storage.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

# Run databases are written by one run and read by the UI a few at a time: a few open at once.
MAX_OPEN_DATABASES = 16
# Dagster hands grouped events (a run's planned events, an output's partitions) to
# ``store_event_batch`` only when this variable is positive. The Dockerfile sets the same value for
# production, where Dagster's PostgreSQL storage batches natively.
EVENT_BATCH_SIZE = "1000"


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one reused engine and connection per database file."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # set before the parent's __init__, which may already connect to the index database
        self._engines: OrderedDict[tuple[int, str], Engine] = OrderedDict()
        self._tables: set[str] = set()
        # every process that writes events (webserver, daemon, run worker) builds this storage
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        super().__init__(base_dir, inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        """``base_dir`` defaults to where Dagster's default storage keeps run logs in DAGSTER_HOME."""
        base_dir = config_value.get("base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")
        return cls(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine; keyed by process so a forked child never shares a parent's socket."""
        key = (os.getpid(), shard)
        engine = self._engines.get(key)
        if engine is not None:
            self._engines.move_to_end(key)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            poolclass=QueuePool,
            pool_size=1,
            # Dagster's thread lock serializes every use; the UI's threads take turns on it
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        self._engines[key] = engine
        while len(self._engines) > MAX_OPEN_DATABASES:
            (pid, _), oldest = self._engines.popitem(last=False)
            oldest.dispose(close=pid == os.getpid())
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store a batch Dagster groups (a run's planned events, an output's partitions) in one
        transaction per database instead of two per event; the asset table, which keeps only an
        asset's latest event of each kind, is written once per asset and kind."""
        if len({event.run_id for event in events}) != 1:
            super().store_event_batch(events)
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        asset_events: list[tuple[EventLogEntry, int]] = []
        check_events: list[tuple[EventLogEntry, int]] = []
        with self.index_connection() as conn:
            for event, statement in zip(events, statements, strict=True):
                kind = event.dagster_event_type
                if kind in ASSET_EVENTS or kind in ASSET_CHECK_EVENTS:
                    event_id = conn.execute(statement).inserted_primary_key[0]
                    (check_events if kind in ASSET_CHECK_EVENTS else asset_events).append((event, event_id))
            if asset_events:
                self._store_asset_event_tags(conn, *zip(*asset_events, strict=True))
            latest = {
                (event.get_dagster_event().asset_key, event.dagster_event_type): position
                for position, (event, _) in enumerate(asset_events)
            }
            for position in sorted(latest.values()):  # in the order they happened
                self._store_asset_event(conn, *asset_events[position])
        for event, event_id in check_events:  # each in a transaction of its own, as Dagster does
            self.store_asset_check_event(event, event_id)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before storing every asset check event, with a new engine each time;
        a table, once there, stays (migrations only add tables)."""
        if table_name not in self._tables and super().has_table(table_name):
            self._tables.add(table_name)
        return table_name in self._tables

    def _close_all(self) -> None:
        with self._db_lock:
            for (pid, _), engine in self._engines.items():
                engine.dispose(close=pid == os.getpid())
            self._engines.clear()

    def wipe(self) -> None:
        self._close_all()  # wipe deletes the run files: no connection may keep one alive
        self._tables.clear()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_all()
