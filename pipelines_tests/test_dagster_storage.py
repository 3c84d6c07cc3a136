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

from pipelines.dagster_storage import EVENT_BATCH_SIZE, MAX_OPEN_DATABASES, PooledSqliteEventLogStorage

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


@dg.asset_check(asset=numbers, blocking=True)
def numbers_have_a_first_day(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[numbers])
def broken(context: dg.AssetExecutionContext) -> None:
    raise RuntimeError("boom")


def stored_outcome(instance: dg.DagsterInstance, run_id: str) -> dict[str, object]:
    """What the UI and the asset daemon read back, with run-specific ids left out."""
    partitions = list(DAYS.get_partition_keys())
    logs = sorted(
        (e.dagster_event_type.value, str(e.dagster_event.asset_key), e.dagster_event.partition or "")
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.asset_key is not None
    )
    outcome: dict[str, object] = {"run log": logs}
    for key in (dg.AssetKey("numbers"), dg.AssetKey("broken")):
        entry = instance.get_asset_records([key])[0].asset_entry
        latest = entry.last_materialization_record
        outcome[key.to_user_string()] = {
            "last run is this run": entry.last_run_id == run_id,
            "latest partition": latest.partition_key if latest else None,
            "materialized": sorted(instance.get_materialized_partitions(key)),
            "planned": sorted(
                r.partition_key or "" for r in instance.fetch_planned_materializations(key, limit=100).records
            ),
            "status": [str(s) for s in instance.get_status_by_partition(key, partitions, DAYS).values()],
        }
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("numbers"), "numbers_have_a_first_day"), limit=100
    )
    outcome["check executions"] = sorted((r.partition or "", r.status.value) for r in history)
    return outcome


def test_batched_events_are_stored_exactly_as_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster groups a run's planned events and an output's partitions; written in one
    transaction, they must leave every table as the event-at-a-time path leaves it, including the
    failed partitions the UI shows (computed from planned events)."""
    batches: list[int] = []
    original = PooledSqliteEventLogStorage.store_event_batch

    def counting(self: PooledSqliteEventLogStorage, events: list[EventLogEntry]) -> None:
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "store_event_batch", counting)
    outcomes = []
    for batch_size in ("0", "1000"):
        home = tmp_path / f"batch-{batch_size}"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
        instance = dg.DagsterInstance.get()
        try:
            result = dg.materialize(
                [numbers, numbers_have_a_first_day, broken],
                instance=instance,
                raise_on_error=False,
                tags={
                    "dagster/asset_partition_range_start": "2026-03-02",
                    "dagster/asset_partition_range_end": "2026-03-04",
                },
            )
            assert not result.success  # `broken` fails: its planned partitions become failed
            outcomes.append(stored_outcome(instance, result.run_id))
        finally:
            instance.dispose()
        if batch_size == "0":
            assert batches == []  # the baseline really went one event at a time
    assert batches, "Dagster never handed the storage a batch"
    assert max(batches) >= 3  # the planned events of the run, then each output's 3 partitions
    unbatched, batched = outcomes
    assert batched == unbatched
    numbers_outcome = batched["numbers"]
    assert numbers_outcome["materialized"] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert numbers_outcome["latest partition"] == "2026-03-04"
    assert batched["broken"]["materialized"] == []
    assert batched["broken"]["status"].count("AssetPartitionStatus.FAILED") == 3
    # a check planned per partition of the range; its one (unpartitioned) result recorded
    assert batched["check executions"] == [("", "SUCCEEDED")] + [
        (day, "PLANNED") for day in ("2026-03-02", "2026-03-03", "2026-03-04")
    ]


def test_the_storage_and_the_image_turn_batching_on_with_one_value(instance: dg.DagsterInstance) -> None:
    import os

    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == EVENT_BATCH_SIZE  # set by building the storage
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ENV DAGSTER_EVENT_BATCH_SIZE={EVENT_BATCH_SIZE}\n" in dockerfile
