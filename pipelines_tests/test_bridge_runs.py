"""How the bridge runs SQLMesh: who asked decides recompute vs due, honest status, plans, audits."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipelines_tests.conftest import Deployment, check_results, materialized_keys
from pipelines_tests.sqlmesh_projects import write_project

SOURCE, TOTALS, SUMMARY = (
    dg.AssetKey(["demo", "daily_source"]),
    dg.AssetKey(["demo", "daily_totals"]),
    dg.AssetKey(["demo", "summary"]),
)


def use_project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> Path:
    project = write_project(deployment.root, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    return project


def run_with_tags(
    deployment: Deployment, keys: list[dg.AssetKey], tags: dict[str, str]
) -> dg.ExecuteInProcessResult:
    defs = deployment.definitions()
    job = dg.define_asset_job("tagged_run", selection=keys)
    job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("tagged_run")
    return job_def.execute_in_process(instance=deployment.instance, tags=tags, raise_on_error=False)


def warnings_of(deployment: Deployment, result: dg.ExecuteInProcessResult) -> list[str]:
    records = deployment.instance.all_logs(result.run_id)
    return [r.user_message for r in records if r.level >= 30]


def test_person_run_recomputes_and_automated_run_computes_what_is_due(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch)
    assert deployment.run([SOURCE, TOTALS], start="2026-03-01").success
    assert materialized_keys(deployment.run([SUMMARY])) == {SUMMARY}
    # a click on Materialize recomputes the FULL model although SQLMesh thinks it is done
    again = deployment.run([SUMMARY])
    assert again.success and materialized_keys(again) == {SUMMARY}
    # a schedule's run computes what is due: nothing, and says so
    scheduled = run_with_tags(deployment, [SUMMARY], {"dagster/schedule_name": "daily"})
    assert scheduled.success and materialized_keys(scheduled) == set()
    assert any("SQLMesh computed nothing" in m for m in warnings_of(deployment, scheduled))
    observations = [e for e in scheduled.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert [o.asset_key for o in observations] == [SUMMARY]
    # an automation sensor's partitioned run: the day is done, nothing recomputed
    sensed = run_with_tags(
        deployment,
        [SOURCE],
        {
            "dagster/sensor_name": "catch_up",
            "dagster/asset_partition_range_start": "2026-03-01",
            "dagster/asset_partition_range_end": "2026-03-01",
        },
    )
    assert sensed.success and materialized_keys(sensed) == set()


def test_skipped_models_name_the_failed_upstream(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch, broken=True)
    broken, after = dg.AssetKey(["demo", "broken"]), dg.AssetKey(["demo", "after_broken"])
    result = deployment.run([SOURCE, broken, after], start="2026-03-01")
    assert not result.success
    warnings = warnings_of(deployment, result)
    assert any("demo.after_broken: skipped, upstream model failed: demo.broken" in w for w in warnings)
    assert not any("after_broken: nothing was due" in w for w in warnings)


def test_sqlmesh_failure_without_a_model_error_fails_the_step() -> None:
    from types import SimpleNamespace

    from dagster_sqlmesh_bridge.events import RunRecord
    from dagster_sqlmesh_bridge.reporting import raise_on_failure

    record = RunRecord(errors={'"db"."audits"."standalone"': "AuditError: 3 rows failed"})
    model = SimpleNamespace(fqn='"db"."demo"."x"', name="demo.x")
    with pytest.raises(dg.Failure) as failure:
        raise_on_failure(None, [model], record, SimpleNamespace(name="FAILURE"))  # type: ignore[arg-type]
    assert "AuditError: 3 rows failed" in str(failure.value.description)
    raise_on_failure(None, [model], RunRecord(), SimpleNamespace(name="SUCCESS"))  # type: ignore[arg-type]


NEW_MODEL = """\
MODEL (name demo.new_daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT ds, total FROM demo.daily_totals WHERE ds BETWEEN @start_date AND @end_date
"""


def test_plan_job_deploys_and_backfills_a_new_model_without_allow_breaking(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlmesh import Context

    project = use_project(deployment, monkeypatch)
    assert deployment.run([SOURCE, TOTALS], start="2026-03-01", end="2026-03-02").success
    (project / "models" / "new_daily.sql").write_text(NEW_MODEL)
    plan = (
        deployment.definitions()
        .resolve_job_def("sqlmesh_plan")
        .execute_in_process(instance=deployment.instance)
    )
    assert plan.success
    ctx = Context(paths=str(project))
    try:
        env = ctx.state_sync.get_environment("prod")
        info = next(s for s in env.snapshots if s.name.endswith('"new_daily"'))
        intervals = ctx.state_sync.get_snapshots([info.snapshot_id])[info.snapshot_id].intervals
        # SQLMesh's plan: from the model's start (2026-01-01) to the end prod has reached
        # (2026-03-03), and the unchanged upstream's missing days too, as bare `sqlmesh plan` does
        assert intervals == [(1767225600000, 1772496000000)]
        rows = ctx.engine_adapter.fetchall("SELECT count(*) FROM demo.new_daily")
        upstream = ctx.engine_adapter.fetchall("SELECT count(*) FROM demo.daily_totals")
    finally:
        ctx.close()
    assert rows == upstream == [(61,)]
    # Dagster shows what the plan built: every day of the new model
    built = deployment.instance.get_materialized_partitions(dg.AssetKey(["demo", "new_daily"]))
    assert len(built) == 61 and min(built) == "2026-01-01" and max(built) == "2026-03-02"
    assert deployment.run([dg.AssetKey(["demo", "new_daily"])], start="2026-03-03").success


TWO_RANGES = """\
MODEL (
  name demo.daily_totals,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  audits (
    accepted_range(column := total, min_v := 0),
    accepted_range(column := total, min_v := 1000000)
  )
);
SELECT ds, sum(amount)::BIGINT AS total FROM demo.daily_source
WHERE ds BETWEEN @start_date AND @end_date GROUP BY ds
"""


def test_audit_results_match_the_audit_not_just_its_name(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = use_project(deployment, monkeypatch, summary=False)
    (project / "models" / "daily_totals.sql").write_text(TWO_RANGES)
    result = deployment.run([SOURCE, TOTALS], start="2026-03-01")
    checks = check_results(result)
    assert checks[("demo/daily_totals", "accepted_range")].passed is True
    assert checks[("demo/daily_totals", "accepted_range_2")].passed is False


def test_console_handles_every_abstract_console_method() -> None:
    from sqlmesh.core.console import Console

    from dagster_sqlmesh_bridge.events import HANDLED, IGNORED, RecordingConsole

    unhandled = set(Console.__abstractmethods__) - HANDLED - IGNORED
    assert not unhandled, f"SQLMesh added console methods the bridge does not handle: {sorted(unhandled)}"
    for name in HANDLED:
        assert name in vars(RecordingConsole), name
