"""The local event log (``pipelines.dagster_storage``): Dagster's SQLite storage with open connections.

It must behave exactly like Dagster's own: what one process writes another reads at once, run
databases are bounded in number of open connections, and wiping works while connections are open.
"""

import logging
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry

from pipelines.dagster_storage import MAX_OPEN_DATABASES, PooledSqliteEventLogStorage

REPO = Path(__file__).resolve().parents[1]
DAYS = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-03-08")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"first_day": context.partition_key_range.start})


@dg.asset
def plain() -> None:
    return None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME configured by the repository's own dagster.yaml."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    """The home's instance, not entered as a context manager: entering it publishes its
    defs-state storage in a ContextVar, which made repeated ``materialize`` calls in one test
    flaky in CI ("undefined DagsterInstance weakref")."""
    instance = dg.DagsterInstance.get()
    try:
        yield instance
    finally:
        instance.dispose()


def materialized_days(home: Path) -> int:
    """Count materializations from a fresh process: proves they are committed, not just cached."""
    code = (
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    print(len(i.get_materialized_partitions(dg.AssetKey('numbers'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_the_repository_instance_uses_it_and_other_processes_see_every_event(
    home: Path, instance: dg.DagsterInstance
) -> None:
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    assert Path(storage._base_dir) == home / "history" / "runs"
    result = dg.materialize(
        [numbers],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-03-01",
            "dagster/asset_partition_range_end": "2026-03-05",
        },
    )
    assert result.success
    assert materialized_days(home) == 5  # read by another process while ours stays open
    records = instance.fetch_materializations(dg.AssetKey("numbers"), limit=10).records
    assert sorted(r.partition_key for r in records) == [f"2026-03-0{d}" for d in range(1, 6)]
    # asked before every asset check event: remembered once found, never invented
    assert storage.has_table("asset_check_executions") and storage.supports_asset_checks
    assert not storage.has_table("no_such_table")


def test_open_databases_are_bounded_and_wipe_works_with_connections_open(
    home: Path, instance: dg.DagsterInstance
) -> None:
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    # one log line in each of more run databases than may stay open (written directly: a
    # definitions load per run made this test flaky in CI, see the ``instance`` fixture)
    runs = [str(uuid.uuid4()) for _ in range(MAX_OPEN_DATABASES + 4)]
    for run_id in runs:
        storage.store_event(
            EventLogEntry(
                error_info=None,
                level=logging.INFO,
                user_message=f"hello from {run_id}",
                run_id=run_id,
                timestamp=time.time(),
            )
        )
    assert len(storage._engines) <= MAX_OPEN_DATABASES
    # the oldest run's connection was closed; reading it again reopens it
    assert [e.user_message for e in instance.all_logs(runs[0])] == [f"hello from {runs[0]}"]
    storage.wipe()
    assert [shard for _, shard in storage._engines] in ([], ["index"])  # wipe reopens the index
    assert not list((home / "history" / "runs").glob(f"{runs[-1]}.db"))
    assert dg.materialize([plain], instance=instance).success  # still usable after a wipe
    assert instance.get_latest_materialization_event(dg.AssetKey("plain")) is not None


def test_threads_share_it_safely(instance: dg.DagsterInstance) -> None:
    """The UI reads from many threads: every use of a pooled connection is serialized."""
    errors: list[BaseException] = []
    run_id = dg.materialize([plain], instance=instance).run_id

    def read() -> None:
        try:
            for _ in range(20):
                assert instance.all_logs(run_id)
                instance.get_latest_materialization_event(dg.AssetKey("plain"))
        except BaseException as exc:  # collected: an assert in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    assert dg.materialize([plain], instance=instance).success  # writes while they read
    for t in threads:
        t.join(timeout=60)
    assert not errors
