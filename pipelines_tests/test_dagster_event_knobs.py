"""Dagster's event-write knobs as this project sets them (issue 27, docs/benchmarks.md).

``DAGSTER_EVENT_BATCH_SIZE`` is set for local runs (``pipelines`` CLI), in the image and for the
run pods; ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`` is not, because with it the
partitions of a failed run stop being shown as failed. These tests fail when Dagster stops
honouring either knob (a ranged output no longer written in one INSERT on PostgreSQL; the
subset knob no longer changing the planned events) or when the defaults drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy
import yaml

from pipelines.ops.cli import DAGSTER_EVENT_ENV, _dagster_home
from pipelines_tests.services import PostgresServer

REPO = Path(__file__).resolve().parents[1]
SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
DAYS = dg.DailyPartitionsDefinition(start_date="2026-03-01")
RANGE = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def orders(context) -> dg.MaterializeResult:  # noqa: ANN001 (Dagster reads the hint)
    if context.run.tags.get("fail"):
        raise RuntimeError("injected failure")
    return dg.MaterializeResult()


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(), deps=[orders])
def revenue() -> dg.MaterializeResult:
    return dg.MaterializeResult()


JOB = dg.Definitions(assets=[orders, revenue], jobs=[dg.define_asset_job("both")]).resolve_job_def("both")


def _run_range(instance: dg.DagsterInstance, days: list[str], **tags: str) -> dg.ExecuteInProcessResult:
    range_tags = {
        "dagster/asset_partition_range_start": days[0],
        "dagster/asset_partition_range_end": days[-1],
    }
    return JOB.execute_in_process(instance=instance, tags={**range_tags, **tags}, raise_on_error=False)


def _planned(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> list[str | None]:
    """Partition of each ASSET_MATERIALIZATION_PLANNED event of ``run_id`` for ``key``."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, asset_key=key)
    )
    return sorted((r.partition_key for r in records if r.run_id == run_id), key=str)


@pytest.fixture
def knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a local ``pipelines`` command gives its runs (DAGSTER_HOME aside)."""
    for name in (*DAGSTER_EVENT_ENV, SUBSET):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(Path.cwd()))
    _dagster_home()


def test_every_deployment_sets_the_same_knobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*DAGSTER_EVENT_ENV, SUBSET):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    _dagster_home()  # every local command (run, demo, ui and its dg dev child) goes through it
    local = {name: value for name, value in os.environ.items() if name.startswith("DAGSTER_E")}
    assert local == DAGSTER_EVENT_ENV

    dockerfile = (REPO / "Dockerfile").read_text()
    image = dict(re.findall(r"^\s*(DAGSTER_E[A-Z_]+)=(\S+)", dockerfile, flags=re.MULTILINE))
    assert image == DAGSTER_EVENT_ENV

    values = yaml.safe_load((REPO / "helm-values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pods = {k: v for k, v in deployment["env"].items() if k.startswith("DAGSTER_E")}
    assert pods == DAGSTER_EVENT_ENV  # run pods inherit it (includeConfigInLaunchedRuns)

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "7")  # an operator's own value wins
    _dagster_home()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "7"


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement executed through SQLAlchemy in this process while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)


def test_postgres_writes_a_ranged_outputs_materializations_in_one_insert(
    knobs: None, postgres_server: PostgresServer, tmp_path: Path, statements: list[str]
) -> None:
    url = postgres_server.url(postgres_server.create_database()).replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    storage = {"postgres": {"postgres_url": url}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"storage": storage}) as instance:
        statements.clear()
        result = _run_range(instance, RANGE)
        assert result.success
        inserts = [s for s in statements if re.match(r"\s*INSERT INTO event_logs\b", s)]
        for key in (orders.key, revenue.key):
            assert len(instance.fetch_materializations(key, limit=100).records) == len(RANGE)
        events = len(instance.all_logs(result.run_id))
        # one INSERT per event, except each asset's 5 materializations: one INSERT for all 5
        assert len(inserts) == events - 2 * (len(RANGE) - 1)
        # planned events stay per partition: what marks a failed run's partitions failed
        assert _planned(instance, result.run_id, orders.key) == RANGE


def test_a_failed_range_runs_partitions_are_shown_failed(knobs: None, tmp_path: Path) -> None:
    """What the UI's partition status reads (the instance's asset status cache): with the
    project's knobs the partitions of a failed single-run backfill are failed, and those of its
    skipped downstream asset too; with the subset knob (not chosen) Dagster forgets them."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert _run_range(instance, RANGE[:2]).success
        failed = _run_range(instance, RANGE, fail="yes")
        assert not failed.success
        assert instance.get_run_by_id(failed.run_id).status == dg.DagsterRunStatus.FAILURE
        for key in (orders.key, revenue.key):
            status = instance.get_status_by_partition(key, RANGE, DAYS)
            assert status == dict.fromkeys(RANGE, dg.AssetPartitionStatus.FAILED), key

    (tmp_path / "b").mkdir()
    with (
        pytest.MonkeyPatch.context() as patch,
        dg.instance_for_test(temp_dir=str(tmp_path / "b")) as instance,
    ):
        patch.setenv(SUBSET, "true")
        failed = _run_range(instance, RANGE, fail="yes")
        assert _planned(instance, failed.run_id, orders.key) == [None]  # one event for the range
        status = instance.get_status_by_partition(orders.key, RANGE, DAYS)
        assert dg.AssetPartitionStatus.FAILED not in (status or {}).values()
