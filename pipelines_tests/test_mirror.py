"""The ``sqlmesh_mirror`` job: after a ``sqlmesh plan`` applied outside Dagster, Dagster's catalog
is made to show what SQLMesh's state holds, and the job says what it changed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pipelines_tests.conftest import Deployment
from pipelines_tests.sqlmesh_projects import write_project
from pipelines_tests.test_bridge_runs import NEW_MODEL, SOURCE, TOTALS

NEW = dg.AssetKey(["demo", "new_daily"])


def messages(deployment: Deployment, result: dg.ExecuteInProcessResult) -> list[str]:
    return [r.user_message for r in deployment.instance.all_logs(result.run_id) if r.user_message]


def test_the_mirror_records_what_a_plan_outside_dagster_built_and_then_nothing(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlmesh import Context

    project: Path = write_project(deployment.root)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    assert deployment.run([SOURCE, TOTALS], start="2026-03-01", end="2026-03-02").success
    # a model added and deployed with bare SQLMesh, as an operator might from a shell
    (project / "models" / "new_daily.sql").write_text(NEW_MODEL)
    ctx = Context(paths=str(project))
    try:
        ctx.plan("prod", auto_apply=True, no_prompts=True)
        env = ctx.state_sync.get_environment("prod")
        snapshot = next(s for s in env.snapshots if s.name.endswith('"new_daily"'))
        held = ctx.state_sync.get_snapshots([snapshot.snapshot_id])[snapshot.snapshot_id].intervals
    finally:
        ctx.close()
    assert held  # SQLMesh built the new model's days
    assert not deployment.instance.get_materialized_partitions(NEW)  # Dagster knows nothing of them

    mirror = deployment.definitions().resolve_job_def("sqlmesh_mirror")
    first = mirror.execute_in_process(instance=deployment.instance)
    assert first.success
    shown = deployment.instance.get_materialized_partitions(NEW)
    assert len(shown) == 61 and min(shown) == "2026-01-01" and max(shown) == "2026-03-02"
    said = messages(deployment, first)
    assert any("recorded 61 partition(s)" in m and "demo/new_daily" in m for m in said), said
    # the unchanged models' days the plan filled in are recorded too, under their own version
    assert len(deployment.instance.get_materialized_partitions(TOTALS)) == 61
    # converged: a second mirror changes nothing and says so
    second = mirror.execute_in_process(instance=deployment.instance)
    assert second.success and not second.get_asset_materialization_events()
    assert any("Dagster already mirrors SQLMesh's state" in m for m in messages(deployment, second))
