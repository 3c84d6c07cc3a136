"""Release notes: every plan the ``sqlmesh_plan`` job applies leaves a record in the lake."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.component.releases import list_releases, release_keys
from pipelines.ops.cli import main as cli_main
from pipelines.platform.lake import Lake
from pipelines_tests.conftest import Deployment
from pipelines_tests.services import S3Env
from pipelines_tests.sqlmesh_projects import write_project
from pipelines_tests.test_engine import query

TOTALS = dg.AssetKey(["demo", "daily_totals"])


def deployed(project: Path) -> dict[str, tuple[str, str]]:
    """(version, fingerprint) of every model in prod, read from SQLMesh state."""
    from sqlmesh import Context

    from dagster_sqlmesh_bridge.plan_outcome import short_name

    ctx = Context(paths=str(project))
    try:
        env = ctx.state_sync.get_environment("prod")
        return {short_name(s.name): (s.version, s.fingerprint.to_identifier()) for s in env.snapshots}
    finally:
        ctx.close()


def plan(deployment: Deployment) -> dg.ExecuteInProcessResult:
    result = (
        deployment.definitions()
        .resolve_job_def("sqlmesh_plan")
        .execute_in_process(instance=deployment.instance, tags={"dagster/user": "ana@example.com"})
    )
    assert result.success
    return result


def test_two_plans_leave_two_release_records_with_the_right_versions(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    project = write_project(deployment.root)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    monkeypatch.setenv("PIPELINES_GIT_COMMIT", "a" * 40)
    lake = Lake(deployment.settings.lake_uri)

    plan(deployment)  # first plan: creates prod
    first_state = deployed(project)
    assert deployment.run(
        [dg.AssetKey(["demo", "daily_source"]), TOTALS], start="2026-03-01", end="2026-03-02"
    ).success

    path = project / "models" / "daily_totals.sql"
    path.write_text(path.read_text().replace("count(*)::BIGINT AS n", "count(*)::BIGINT AS n, 1 AS v"))
    monkeypatch.setenv("PIPELINES_GIT_COMMIT", "b" * 40)
    second = plan(deployment)
    second_state = deployed(project)

    newest, oldest = list_releases(lake)
    assert oldest["created_environment"] is True and oldest["git_commit"] == "a" * 40
    assert {m["model"]: m["change_category"] for m in oldest["models"]} == {
        "demo.daily_source": "ADDED",
        "demo.daily_totals": "ADDED",
        "demo.summary": "ADDED",
    }
    assert all(
        (m["new_version"], m["new_fingerprint"]) == first_state[m["model"]] and m["old_version"] is None
        for m in oldest["models"]
    )

    assert newest["git_commit"] == "b" * 40 and newest["applied_by"] == "ana@example.com"
    assert newest["run_id"] == second.run_id and newest["applied_at"] > oldest["applied_at"]
    changes = {m["model"]: m for m in newest["models"]}
    assert set(changes) == {"demo.daily_totals", "demo.summary"}  # daily_source did not change
    totals = changes["demo.daily_totals"]
    assert totals["change_category"] == "NON_BREAKING"  # a column added at the end
    assert (totals["old_version"], totals["old_fingerprint"]) == first_state["demo.daily_totals"]
    assert (totals["new_version"], totals["new_fingerprint"]) == second_state["demo.daily_totals"]
    assert totals["old_version"] != totals["new_version"]
    assert changes["demo.summary"]["change_category"] == "INDIRECT_NON_BREAKING"
    # SQLMesh's plan builds the new version from the model's start to the end prod had reached
    assert totals["recomputed_intervals"] == [["2026-01-01T00:00:00Z", "2026-03-03T00:00:00Z"]]
    assert any(line.startswith("+") and "1 AS v" in line for line in totals["diff"].splitlines())

    # the human-readable release beside the record
    json_key, md_key = release_keys(newest)
    assert json.loads(lake.get_bytes(json_key)) == newest
    markdown = lake.get_bytes(md_key).decode()
    assert (
        f"| `demo.daily_totals` | non-breaking | {totals['old_version']} → {totals['new_version']}"
        in markdown
    )
    assert "```diff" in markdown and "1 AS v" in markdown

    # the changed models' assets link to it
    seen = [
        e.asset_observation_data.asset_observation
        for e in second.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    observations = {o.asset_key: o.metadata for o in seen}
    assert set(observations) == {TOTALS, dg.AssetKey(["demo", "summary"])}
    assert observations[TOTALS]["sqlmesh/release"].value == lake.url(md_key)
    assert observations[TOTALS]["sqlmesh/version"].value == totals["new_version"]

    # `pipelines releases`: newest first
    assert cli_main(["releases"]) == 0
    out = capsys.readouterr().out
    assert out.index(newest["applied_at"][:19]) < out.index(oldest["applied_at"][:19])
    assert "NON_BREAKING" in out and "demo.daily_totals" in out


def test_a_plan_whose_backfill_fails_leaves_prod_untouched_and_says_so(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the new version fails: prod keeps its versions and rows, no release is recorded,
    the failure says the plan was not applied and why; retried, it fails the same way."""
    project = write_project(deployment.root)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    lake = Lake(deployment.settings.lake_uri)
    plan(deployment)
    assert deployment.run(
        [dg.AssetKey(["demo", "daily_source"]), TOTALS], start="2026-03-01", end="2026-03-02"
    ).success
    before = deployed(project)
    rows = totals_rows(deployment)
    assert len(rows) == 2
    path = project / "models" / "daily_totals.sql"
    path.write_text(
        path.read_text().replace(
            "count(*)::BIGINT AS n", "count(*)::BIGINT AS n, CAST(error('boom') AS BIGINT) AS v"
        )
    )
    for _attempt in range(2):  # a retry of the same change meets the same failure
        failed = (
            deployment.definitions()
            .resolve_job_def("sqlmesh_plan")
            .execute_in_process(instance=deployment.instance, raise_on_error=False)
        )
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        message = str(failure.event_specific_data.error)
        assert "plan not applied" in message and "stays on its previous versions, untouched" in message
        assert "boom" in message
        assert deployed(project) == before
        assert totals_rows(deployment) == rows  # prod's view still reads the old version's table
        assert len(list_releases(lake)) == 1  # only the first plan's


def totals_rows(deployment: Deployment) -> list[tuple]:
    """Every row prod's daily_totals view returns, in order."""
    return query(deployment, "SELECT * FROM demo.daily_totals ORDER BY ds")


def test_release_records_on_s3_list_newest_first(s3_env: S3Env, capsys: pytest.CaptureFixture) -> None:
    from datetime import UTC, datetime

    from dagster_sqlmesh_bridge.plan_outcome import ModelChange, PlanOutcome
    from pipelines.component.releases import build_release, format_releases, write_release

    lake = Lake(s3_env.uri("lake"))
    for hour, (old, new) in enumerate([(None, "v1"), ("v1", "v2"), ("v2", "v3")]):
        change = ModelChange(
            "marts.m", "BREAKING" if old else "ADDED", old and f"f{old}", f"f{new}", old, new
        )
        record = build_release(
            PlanOutcome("prod", old is None, [change]),
            run_id=f"run-{hour}",
            applied_by="ci",
            git_commit="abc1234",
            applied_at=datetime(2026, 11, 28, 10 + hour, tzinfo=UTC),
        )
        write_release(lake, record)
    records = list_releases(lake)
    assert [r["models"][0]["new_version"] for r in records] == ["v3", "v2", "v1"]
    assert [r["run_id"] for r in list_releases(lake, limit=1)] == ["run-2"]
    keys = sorted(o.key for o in lake.list("audit/releases"))
    assert keys[0] == "audit/releases/2026/11/28/20261128T100000000000Z-run-0.json"
    assert len(keys) == 6  # a markdown beside each record
    text = format_releases(records, lake)
    assert text.index("2026-11-28T12:00:00Z") < text.index("2026-11-28T10:00:00Z")
    assert text.splitlines()[1].split() == ["BREAKING", "marts.m", "v2", "->", "v3"]
    with pytest.raises(ValueError):
        build_release(PlanOutcome("prod", True, []), run_id="../../x", applied_by=None, git_commit=None)


def test_the_first_plan_of_the_bundled_project_releases_its_models_not_its_sources(
    deployment: Deployment,
) -> None:
    plan(deployment)
    (record,) = list_releases(Lake(deployment.settings.lake_uri))
    models = {m["model"]: m["change_category"] for m in record["models"]}
    assert len(models) == 12 and set(models.values()) == {"ADDED"}
    assert "marts.daily_revenue" in models and not any(m.startswith("raw.") for m in models)


def test_a_release_whose_write_failed_after_prod_moved_is_completed_by_the_retry(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lake refuses the release record once (an injected fault) after prod's views moved:
    the job fails, no half record is left, and the retry, which has nothing left to apply,
    records that plan's release from SQLMesh's state. A third run records nothing more."""
    from pipelines.component import plan_records, releases

    project = write_project(deployment.root)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    lake = Lake(deployment.settings.lake_uri)
    plan(deployment)
    path = project / "models" / "daily_totals.sql"
    path.write_text(path.read_text().replace("count(*)::BIGINT AS n", "count(*)::BIGINT AS n, 1 AS v"))
    stock = releases.write_release
    calls = {"n": 0}

    def refused_once(store: Lake, record: dict) -> tuple[str, str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("injected: the lake refuses the write")
        return stock(store, record)

    monkeypatch.setattr(plan_records, "write_release", refused_once)
    job = deployment.definitions().resolve_job_def("sqlmesh_plan")
    failed = job.execute_in_process(instance=deployment.instance, raise_on_error=False)
    assert not failed.success
    moved = deployed(project)["demo.daily_totals"]
    assert len(list_releases(lake)) == 1  # the first plan's only
    retried = job.execute_in_process(instance=deployment.instance)
    assert retried.success
    records = list_releases(lake)
    assert len(records) == 2
    changes = {m["model"]: m for m in records[0]["models"]}
    assert (
        changes["demo.daily_totals"]["new_version"],
        changes["demo.daily_totals"]["new_fingerprint"],
    ) == moved
    assert records[0]["plan_id"] and records[0]["plan_id"] != records[1]["plan_id"]
    assert job.execute_in_process(instance=deployment.instance).success
    assert len(list_releases(lake)) == 2
