"""Schedules and catch-up on a project with hourly, daily and monthly models (not the shop's).

Dagster runs one partitions definition per job: each (cron, partitions definition) gets its own
job and schedule, and every request the schedules and the catch-up sensor make is run here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from dagster_sqlmesh_bridge import load_project
from dagster_sqlmesh_bridge.schedules import (
    RANGE_END,
    RANGE_START,
    build_catch_up_sensor,
    catch_up_keys,
    cron_groups,
)
from pipelines.component.translation import PipelinesTranslator
from pipelines.platform.settings import Settings
from pipelines_tests.conftest import Deployment
from pipelines_tests.sqlmesh_projects import CONFIG, write_files

UNITS_FILES = {
    "models/hourly.sql": """\
MODEL (
  name units.hourly,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ts),
  interval_unit 'hour',
  cron '@hourly'
);
SELECT ts::TIMESTAMP AS ts, hour(ts)::INT AS h
FROM generate_series(@start_ts::TIMESTAMP, @end_ts::TIMESTAMP - INTERVAL 1 SECOND, INTERVAL 1 HOUR) AS t(ts)
""",
    # hourly intervals computed once a day: same cron as the daily model, another partitioning
    "models/hourly_daily.sql": """\
MODEL (
  name units.hourly_daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ts),
  interval_unit 'hour',
  cron '@daily'
);
SELECT ts::TIMESTAMP AS ts, 1 AS x
FROM generate_series(@start_ts::TIMESTAMP, @end_ts::TIMESTAMP - INTERVAL 1 SECOND, INTERVAL 1 HOUR) AS t(ts)
""",
    "models/daily.sql": """\
MODEL (name units.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), cron '@daily');
SELECT @start_date::DATE AS ds, 1 AS x
""",
    "models/monthly.sql": """\
MODEL (
  name units.monthly,
  kind INCREMENTAL_BY_TIME_RANGE (time_column month_start),
  interval_unit 'month',
  cron '@monthly'
);
SELECT @start_date::DATE AS month_start, 1 AS x
""",
    "models/totals.sql": """\
MODEL (name units.totals, kind FULL, cron '@daily');
SELECT count(*)::BIGINT AS n FROM units.daily
""",
}


def write_units_project(root: Path) -> Path:
    project, db = root / "units", root / "units-db"
    db.mkdir(parents=True)
    write_files(project, UNITS_FILES)
    (project / "config.yaml").write_text(CONFIG.format(db=db / "warehouse.duckdb", state=db / "state.duckdb"))
    return project


def key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["units", table])


JOBS = {
    "scheduled_hourly": [key("hourly")],
    "scheduled_daily_day": [key("daily")],
    "scheduled_daily_hour": [key("hourly_daily")],
    "scheduled_daily_unpartitioned": [key("totals")],
    "scheduled_monthly": [key("monthly")],
}


@pytest.fixture
def units_defs(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(write_units_project(deployment.root)))
    monkeypatch.setenv("PIPELINES_CATCH_UP_GRACE_HOURS", "0")
    monkeypatch.setenv("PIPELINES_CATCH_UP_DAYS", "2")
    return deployment.definitions()


def scheduled(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, at: datetime) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def(f"{job}_schedule")
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    return request


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest, job: str) -> set[str]:
    """Run a request the way the daemon would; the partitions it materialized."""
    tags = {k: v for k, v in request.tags.items() if not k.startswith("dagster/partition")}
    result = defs.resolve_job_def(request.job_name or job).execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=tags, raise_on_error=False
    )
    failures = [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    return {str(e.partition) for e in result.get_asset_materialization_events()}


def test_one_job_and_schedule_per_partitions_definition(
    units_defs: dg.Definitions, deployment: Deployment
) -> None:
    dg.Definitions.validate_loadable(units_defs)
    for job, keys in JOBS.items():
        assert set(units_defs.resolve_job_def(job).asset_layer.selected_asset_keys) == set(keys), job
    graph = units_defs.resolve_asset_graph()
    assert isinstance(graph.get(key("hourly_daily")).partitions_def, dg.HourlyPartitionsDefinition)
    instance = deployment.instance

    def at(*args: int) -> datetime:
        return datetime(*args, tzinfo=UTC)

    assert (
        scheduled(units_defs, instance, "scheduled_hourly", at(2026, 2, 3, 3)).partition_key
        == "2026-02-03-02:00"
    )
    request = scheduled(units_defs, instance, "scheduled_daily_hour", at(2026, 2, 3))
    assert request.partition_key is None
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2026-02-02-00:00", "2026-02-02-23:00")
    assert scheduled(units_defs, instance, "scheduled_daily_day", at(2026, 2, 3)).partition_key == (
        "2026-02-02"
    )
    assert scheduled(units_defs, instance, "scheduled_monthly", at(2026, 2, 1)).partition_key == "2026-01-01"
    unpartitioned = scheduled(units_defs, instance, "scheduled_daily_unpartitioned", at(2026, 2, 3))
    assert unpartitioned.partition_key is None and RANGE_START not in unpartitioned.tags
    # declarative automation: every time-partitioned model follows its inputs partition by
    # partition, whatever its unit; the FULL model refreshes on its cron
    labels = {
        node.key: node.automation_condition.children[0].get_label()
        for node in graph.asset_nodes
        if node.key.path[0] == "units"
    }
    for table in ("hourly", "hourly_daily", "daily", "monthly"):
        assert labels[key(table)] == "eager", table
    assert labels[key("totals")] != "eager"


@pytest.mark.slow
def test_schedule_and_catch_up_requests_run_per_partitions_definition(
    units_defs: dg.Definitions, deployment: Deployment
) -> None:
    instance = deployment.instance
    ticks = {
        "scheduled_hourly": datetime(2026, 2, 3, 3, tzinfo=UTC),
        "scheduled_daily_hour": datetime(2026, 2, 3, tzinfo=UTC),
        "scheduled_daily_day": datetime(2026, 2, 3, tzinfo=UTC),
        "scheduled_monthly": datetime(2026, 2, 1, tzinfo=UTC),
    }
    done = {
        job: launch(units_defs, instance, scheduled(units_defs, instance, job, at), job)
        for job, at in ticks.items()
    }
    assert done["scheduled_hourly"] == {"2026-02-03-02:00"}
    assert done["scheduled_daily_hour"] == {f"2026-02-02-{h:02d}:00" for h in range(24)}
    assert done["scheduled_daily_day"] == {"2026-02-02"}
    assert done["scheduled_monthly"] == {"2026-01-01"}

    # 06:30 on Feb 3, two days of look-back: each group's gaps in its own partitions
    units_defs.resolve_sensor_def("catch_up")  # the code location has it; here with a fixed clock
    settings = Settings.from_env()
    project, translator = load_project(settings.sqlmesh_project_dir), PipelinesTranslator()
    groups = [g for g in cron_groups(project, translator) if g.partitioned]
    sensor = build_catch_up_sensor(
        [(g, units_defs.resolve_job_def(g.job_name), catch_up_keys(g, project, translator)) for g in groups],
        clock=lambda: datetime(2026, 2, 3, 6, 30, tzinfo=UTC),
        lookback_days=2,
        grace=timedelta(0),
    )
    with dg.build_sensor_context(instance=instance) as context:
        result = sensor(context)
    requested = {(r.job_name, r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests or []}
    assert requested == {
        ("scheduled_hourly", "2026-02-01-06:00", "2026-02-03-01:00"),
        ("scheduled_hourly", "2026-02-03-03:00", "2026-02-03-05:00"),
        ("scheduled_daily_hour", "2026-02-01-00:00", "2026-02-01-23:00"),
        ("scheduled_daily_day", "2026-02-01", "2026-02-01"),
    }
    for request in result.run_requests or []:
        assert request.job_name is not None
        got = launch(units_defs, instance, request, request.job_name)
        assert min(got) == request.tags[RANGE_START] and max(got) == request.tags[RANGE_END]
    with dg.build_sensor_context(instance=instance) as context:
        assert not sensor(context).run_requests  # nothing missing any more
