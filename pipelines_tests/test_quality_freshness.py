"""One freshness truth per asset, from the model's own cron, consistent with its schedule.

For every cron shape of the fixture project the asset's ``FreshnessPolicy`` is evaluated the
way Dagster evaluates it, against materializations at the ticks of the schedule Dagster builds
for the same model: a run per tick keeps the asset fresh at every moment; when the runs stop, the
asset is stale once the grace after the first missed tick is over (plus, for uneven periods such
as months, the longest period's slack).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from croniter import croniter

from dagster_sqlmesh_bridge import ModelInfo, SQLMeshTranslator, load_project
from dagster_sqlmesh_bridge.schedules import (
    cron_groups,
    cron_period,
    cron_string,
    freshness_grace,
    freshness_policy_for,
)
from pipelines_tests.conftest import Deployment
from pipelines_tests.freshness import fresh
from pipelines_tests.quality_project import CRONS, write_quality_project

START = datetime(2026, 1, 1, tzinfo=UTC)
RUN_TAKES = timedelta(minutes=1)


def ticks(cron: str, count: int) -> list[datetime]:
    it = croniter(cron, START - timedelta(seconds=1))
    return [it.get_next(datetime) for _ in range(count)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("qa")
    return load_project(write_quality_project(root, root / "data"))


@pytest.mark.parametrize("name", sorted(CRONS))
def test_policy_agrees_with_the_schedule(project: object, name: str) -> None:
    model: ModelInfo = next(m for m in project.internal_models if m.name == name)  # type: ignore[attr-defined]
    assert model.cron == CRONS[name]
    policy = freshness_policy_for(model)
    assert policy is not None
    cron = cron_string(model.cron)  # what the model's schedule ticks on (build_schedule)
    grace = freshness_grace(cron)
    period = cron_period(cron)
    times = ticks(cron, 12)
    runs = [t + RUN_TAKES for t in times]
    # a run per tick: fresh at every moment from the first run on
    step = max(period / 40, timedelta(minutes=1))
    at = runs[0]
    while at < times[-1]:
        assert fresh(policy, runs, at), (name, at)
        at += step
    # the runs stop at tick 6: still fresh just before its grace ends, stale once it has ended
    missed = times[6]
    without = runs[:6]
    slack = period - (missed - times[5])  # shorter months leave the window some slack
    assert fresh(policy, without, missed + grace - timedelta(minutes=2)), name
    assert not fresh(policy, without, missed + grace + slack + RUN_TAKES + timedelta(minutes=2)), name


def test_schedules_tick_on_the_models_crons(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule that runs each model uses the cron its freshness policy comes from."""
    project_dir = write_quality_project(deployment.root, deployment.settings.data_dir)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project_dir))
    defs = deployment.definitions()
    graph = defs.resolve_asset_graph()
    project = load_project(project_dir)
    groups = cron_groups(project, SQLMeshTranslator())
    for name, cron in CRONS.items():
        key = dg.AssetKey(name.split("."))
        [group] = [g for g in groups if key in g.model_keys]
        schedule = defs.get_schedule_def(group.schedule_name)
        assert schedule.cron_schedule == cron_string(cron), name
        assert graph.get(key).freshness_policy == freshness_policy_for(
            project.models[next(f for f, m in project.models.items() if m.name == name)]
        ), name


def test_grace_follows_the_period_and_quality_yaml(tmp_path: Path) -> None:
    project = load_project(write_quality_project(tmp_path, tmp_path / "data"))
    quarter = next(m for m in project.internal_models if m.name == "qa.clicks_quarter")
    window = freshness_policy_for(quarter)
    assert window is not None and hasattr(window, "fail_window")
    assert window.fail_window.to_timedelta() == timedelta(minutes=30)  # 15 min + 15 min grace
    daily = freshness_policy_for(replace(quarter, cron="0 6 * * *"), timedelta(hours=2))
    assert daily is not None and daily.deadline_cron == "0 8 * * *"  # type: ignore[attr-defined]
    assert freshness_policy_for(replace(quarter, kind="VIEW")) is None


def test_each_scheduled_job_has_one_partitions_definition_and_ticks_request_its_keys(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job per cron and partitions definition (Dagster runs one definition per run); each tick
    requests the partitions of its job's own grain that closed since the previous tick."""
    project_dir = write_quality_project(deployment.root, deployment.settings.data_dir)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project_dir))
    defs = deployment.definitions()
    groups = cron_groups(load_project(project_dir), SQLMeshTranslator())
    graph = defs.resolve_asset_graph()
    requested = {}
    for group in groups:
        job = defs.resolve_job_def(group.job_name)  # raises on mixed partitions definitions
        pdefs = {graph.get(k).partitions_def for k in group.model_keys}
        assert len(pdefs - {None}) <= 1, group.job_name
        schedule = defs.resolve_schedule_def(group.schedule_name)
        tick = croniter(cron_string(group.cron), datetime(2026, 3, 1, 12, tzinfo=UTC)).get_next(datetime)
        with dg.build_schedule_context(
            instance=deployment.instance,
            scheduled_execution_time=tick,
            repository_def=defs.get_repository_def(),
        ) as context:
            result = schedule.evaluate_tick(context)
        [request] = result.run_requests or [None]
        if request is not None and group.partitioned:
            key = request.partition_key or request.tags["dagster/asset_partition_range_end"]
            assert job.partitions_def is not None and job.partitions_def.has_partition_key(key), (
                group.job_name
            )
        requested[group.job_name] = request
    hourly = requested["scheduled_hourly"]
    assert hourly is not None and hourly.partition_key == "2026-03-01-12:00"  # the hour that closed at 13:00
    quarter = requested["scheduled_cron_x_15_x_x_x_x"]
    assert (
        quarter is not None and quarter.partition_key == "2026-03-01-12:00"
    )  # the quarter that closed at 12:15
    monthly = requested["scheduled_monthly"]
    assert monthly is not None and monthly.partition_key == "2026-03-01"  # April 1st: March closed
    daily = [g for g in groups if g.cron == "@daily"]
    assert {g.job_name for g in daily} == {"scheduled_daily"}  # one definition: the FULL models ride along
