"""The SQLMesh <-> Dagster engine on real DuckDB files: true outcomes, true intervals."""

from __future__ import annotations

import subprocess
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines_tests.conftest import Deployment, check_results, materialized_keys
from pipelines_tests.sqlmesh_projects import write_project

SOURCE, TOTALS, SUMMARY = (
    dg.AssetKey(["demo", "daily_source"]),
    dg.AssetKey(["demo", "daily_totals"]),
    dg.AssetKey(["demo", "summary"]),
)
BROKEN, AFTER_BROKEN = dg.AssetKey(["demo", "broken"]), dg.AssetKey(["demo", "after_broken"])


def use_project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> Path:
    project = write_project(deployment.root, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    return project


def state_intervals(deployment: Deployment, model: str) -> list[tuple[str, str]]:
    """Processed intervals of ``model`` in prod, read from SQLMesh state (as ISO days)."""
    from sqlmesh import Context

    from pipelines.platform.settings import Settings

    ctx = Context(paths=str(Settings.from_env().sqlmesh_project_dir))
    try:
        env = ctx.state_sync.get_environment("prod")
        info = next(s for s in env.snapshots if s.name.endswith(f'"{model}"'))
        snapshot = ctx.state_sync.get_snapshots([info.snapshot_id])[info.snapshot_id]
        from sqlmesh.utils.date import to_ds

        return [(to_ds(s), to_ds(e)) for s, e in snapshot.intervals]
    finally:
        ctx.close()


def query(deployment: Deployment, sql: str) -> list[tuple]:
    con = duckdb.connect(str(deployment.root / "db" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_model_is_an_asset_with_lineage_and_metadata(deployment: Deployment) -> None:
    defs = deployment.definitions()
    graph = defs.resolve_asset_graph()
    fct = graph.get(dg.AssetKey(["marts", "fct_orders"]))
    assert fct.group_name == "marts"
    assert {"sqlmesh", "duckdb"} <= set(fct.kinds)
    assert fct.owners == ["team:analytics"]
    assert fct.code_version and fct.code_version.isdigit()
    assert isinstance(fct.partitions_def, dg.DailyPartitionsDefinition)
    assert fct.description.startswith("One row per order")
    schema = fct.metadata["dagster/column_schema"]
    assert {c.name for c in schema.columns} >= {"order_id", "order_total_usd"}
    lineage = fct.metadata["dagster/column_lineage"]
    deps = lineage.deps_by_column["customer_segment"]
    assert [(d.asset_key, d.column_name) for d in deps] == [
        (dg.AssetKey(["marts", "dim_customers"]), "segment")
    ]
    refs = fct.metadata["dagster/code_references"].code_references
    assert Path(refs[0].file_path).name == "fct_orders.sql" and Path(refs[0].file_path).exists()
    # FULL models are unpartitioned and still depend on partitioned ones
    dim = graph.get(dg.AssetKey(["marts", "dim_customers"]))
    assert dim.partitions_def is None
    assert dg.AssetKey(["staging", "stg_customers"]) in dim.parent_keys
    # raw tables are the ingestion assets, not duplicated external assets
    stg_orders = graph.get(dg.AssetKey(["staging", "stg_orders"]))
    assert stg_orders.parent_keys == {dg.AssetKey(["raw", "orders"])}
    assert graph.get(dg.AssetKey(["raw", "orders"])).is_materializable
    # audits are checks of the multi-asset that materializes the model (evaluated in its step);
    # blocking ones block
    audits = {s.key.name for s in defs.resolve_assets_def(fct.key).check_specs if s.asset_key == fct.key}
    assert {"not_null", "unique_values", "accepted_range", "assert_referential_integrity"} <= audits
    specs = {
        spec.key.name: spec
        for ad in defs.assets
        if isinstance(ad, dg.AssetsDefinition)
        for spec in ad.check_specs
        if spec.asset_key == fct.key and "sqlmesh/audit" in spec.metadata
    }
    assert {"not_null", "unique_values", "accepted_range", "assert_referential_integrity"} <= set(specs)
    assert all(s.blocking for s in specs.values())  # the audits; the quality checks are the project's
    revenue_specs = {
        spec.key.name: spec
        for ad in defs.assets
        if isinstance(ad, dg.AssetsDefinition)
        for spec in ad.check_specs
        if spec.asset_key == dg.AssetKey(["marts", "daily_revenue"])
    }
    assert revenue_specs["accepted_range_non_blocking"].blocking is False


def test_failed_model_fails_alone_and_downstream_is_skipped(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch, broken=True)
    result = deployment.run(
        [SOURCE, TOTALS, SUMMARY, BROKEN, AFTER_BROKEN], start="2026-03-01", end="2026-03-02"
    )
    assert not result.success
    assert materialized_keys(result) == {SOURCE, TOTALS, SUMMARY}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "demo.broken" in message and "boom: this model is broken on purpose" in message
    assert "after_broken" in message  # reported as not run, never as a success
    assert query(deployment, "SELECT count(*) FROM demo.daily_totals") == [(2,)]


def test_blocking_audit_failure_blocks_downstream(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch, failing_audit="blocking")
    result = deployment.run([SOURCE, TOTALS, SUMMARY], start="2026-03-01")
    assert not result.success
    checks = check_results(result)
    failed = checks[("demo/daily_totals", "accepted_range")]
    assert failed.passed is False and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["failing_rows"].value == 1
    assert checks[("demo/daily_totals", "unique_values")].passed is True
    assert checks[("demo/daily_source", "not_null")].passed is True
    assert materialized_keys(result) == {SOURCE}  # totals failed its audit, summary never ran


def test_non_blocking_audit_failure_warns(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    use_project(deployment, monkeypatch, failing_audit="non_blocking")
    result = deployment.run([SOURCE, TOTALS, SUMMARY], start="2026-03-01")
    assert result.success
    check = check_results(result)[("demo/daily_totals", "accepted_range_non_blocking")]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert materialized_keys(result) == {SOURCE, TOTALS, SUMMARY}


def test_range_backfill_records_exact_intervals_and_restates(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch)
    first = deployment.run([SOURCE, TOTALS], start="2026-03-01", end="2026-03-03")
    assert first.success
    assert state_intervals(deployment, "daily_totals") == [("2026-03-01", "2026-03-04")]
    counts = {
        e.partition: e.materialization.metadata["dagster/row_count"].value
        for e in first.get_asset_materialization_events()
        if e.asset_key == TOTALS
    }
    assert counts == {"2026-03-01": 1, "2026-03-02": 1, "2026-03-03": 1}  # each partition its own
    again = deployment.run([SOURCE, TOTALS], start="2026-03-01", end="2026-03-03")
    assert again.success
    assert TOTALS in materialized_keys(again)  # restated, i.e. really recomputed
    assert state_intervals(deployment, "daily_totals") == [("2026-03-01", "2026-03-04")]
    assert query(deployment, "SELECT count(*), count(DISTINCT ds) FROM demo.daily_totals") == [(3, 3)]
    assert query(deployment, "SELECT count(*) FROM demo.daily_source") == [(9,)]


def test_subset_runs_exactly_the_selection(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    use_project(deployment, monkeypatch)
    assert deployment.run([SOURCE], start="2026-03-01").success
    result = deployment.run([TOTALS], start="2026-03-01")
    assert result.success
    # a person's run restates as SQLMesh does: the selection and what reads it, never upstream
    assert materialized_keys(result) == {TOTALS, SUMMARY}
    # the upstream model kept its single interval: it was not rebuilt for the new day
    result = deployment.run([TOTALS], start="2026-03-02")
    assert materialized_keys(result) == {TOTALS, SUMMARY}
    assert state_intervals(deployment, "daily_source") == [("2026-03-01", "2026-03-02")]


def test_nothing_due_is_not_reported_as_materialized(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch)
    assert deployment.run([SOURCE, TOTALS], start="2026-03-01").success
    config = {"ops": {"sqlmesh_models": {"config": {"restate": False}}}}
    first = deployment.run([SUMMARY], run_config=config)
    assert materialized_keys(first) == {SUMMARY}
    second = deployment.run([SUMMARY], run_config=config)
    assert second.success
    assert materialized_keys(second) == set()


def test_changed_model_needs_an_explicit_plan(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = use_project(deployment, monkeypatch)
    assert deployment.run([SOURCE, TOTALS], start="2026-03-01", end="2026-03-02").success
    path = project / "models" / "daily_totals.sql"
    path.write_text(path.read_text().replace("count(*)::BIGINT AS n", "count(*)::BIGINT AS n, 1 AS v"))
    blocked = deployment.run([TOTALS], start="2026-03-03")
    assert not blocked.success
    failure = next(e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE")
    assert "sqlmesh_plan" in str(failure.event_specific_data.error)
    plan = (
        deployment.definitions()
        .resolve_job_def("sqlmesh_plan")
        .execute_in_process(
            instance=deployment.instance,
            run_config={"ops": {"apply_sqlmesh_plan": {"config": {"allow_breaking": True}}}},
        )
    )
    assert plan.success
    # SQLMesh's plan: the new version from the model's start to where prod was (2026-03-03)
    assert query(deployment, "SELECT count(*), min(v) FROM demo.daily_totals") == [(61, 1)]
    assert deployment.run([TOTALS], start="2026-03-03").success


def test_sqlmesh_init_project_loads_and_materializes(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = deployment.root / "init_project"
    project.mkdir()
    subprocess.run(["sqlmesh", "init", "duckdb"], cwd=project, check=True, capture_output=True, timeout=120)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    monkeypatch.chdir(project)  # the generated config names a relative DuckDB file
    defs = deployment.definitions()
    keys = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "sqlmesh_example"}
    assert keys >= {dg.AssetKey(["sqlmesh_example", "full_model"])}
    yesterday = (date.today() - timedelta(days=1)).isoformat()  # the generated project's start
    result = deployment.run(list(keys), start=yesterday, defs=defs)
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    assert keys <= materialized_keys(result)
