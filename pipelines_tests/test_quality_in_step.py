"""Quality checks made in the SQLMesh step: verdicts travel with each model's materialization,
and a blocking (ERROR) check that fails stops what comes after the step, on a project written
here (not the bundled one)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines_tests.conftest import Deployment, check_results, materialized_keys
from pipelines_tests.sqlmesh_projects import CONFIG

COUNTS = """\
MODEL (name t.counts, kind FULL, audits (not_null(columns := (id))));
SELECT id, id * 2 AS amount FROM read_csv('{csv}')
"""
TOTALS = """\
MODEL (name t.totals, kind FULL);
SELECT count(*) AS n, sum(amount) AS amount FROM t.counts
"""
QUALITY = """\
models:
  t.counts:
    severity: ERROR
    warmup: 1
"""
COUNTS_KEY = dg.AssetKey(["t", "counts"])
TOTALS_KEY = dg.AssetKey(["t", "totals"])


@pytest.fixture
def project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = deployment.root / "blocking_project"
    (root / "models").mkdir(parents=True)
    data = deployment.settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(
        CONFIG.format(db=data / "warehouse.duckdb", state=deployment.root / "state.duckdb")
    )
    (root / "models" / "counts.sql").write_text(COUNTS.format(csv=deployment.root / "ids.csv"))
    (root / "models" / "totals.sql").write_text(TOTALS)
    (root / "quality.yaml").write_text(QUALITY)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(root))
    return root


def write_ids(deployment: Deployment, n: int) -> None:
    (deployment.root / "ids.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(n)))


def test_a_failing_blocking_check_fails_the_step_after_every_model_is_reported(
    project: Path, deployment: Deployment
) -> None:
    after: list[str] = []

    @dg.asset(deps=[TOTALS_KEY])
    def report() -> None:  # stands for the report: a step after the SQLMesh step
        after.append("ran")

    defs = dg.Definitions.merge(deployment.definitions(), dg.Definitions(assets=[report]))
    write_ids(deployment, 10)
    first = deployment.run("*", defs=defs)
    assert first.success and after == ["ran"]
    checks = check_results(first)
    # verdicts of the SQLMesh step, on every model: profile checks and the schema-change check
    assert checks[("t/counts", "volume_anomaly")].passed
    assert checks[("t/counts", "column_schema_change")].passed
    assert checks[("t/totals", "volume_anomaly")].passed
    for name in ("volume_anomaly", "not_null"):  # the SQLMesh audit too: each judges this materialization
        target = checks[("t/counts", name)].target_materialization_data
        assert target is not None and target.run_id == first.run_id, name
    assert [e.step_key for e in first.all_events if e.event_type_value == "STEP_START"] == [
        "sqlmesh_models",
        "report",
    ]  # no check step of their own

    write_ids(deployment, 1000)  # 100x the rows: the volume check fails, and it is blocking
    second = deployment.run("*", defs=defs)
    assert not second.success
    assert materialized_keys(second) == {COUNTS_KEY, TOTALS_KEY}  # every model reported first
    volume = check_results(second)[("t/counts", "volume_anomaly")]
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.ERROR
    assert volume.target_materialization_data is not None
    assert volume.target_materialization_data.run_id == second.run_id  # judges this materialization
    assert check_results(second)[("t/totals", "volume_anomaly")].passed  # WARN default, one point
    failure = next(e for e in second.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "sqlmesh_models" and "blocking asset check" in str(failure.event_specific_data)
    assert after == ["ran"]  # the step after it did not run


def test_checks_alone_run_the_audits_and_the_profile_checks_without_sqlmesh_building(
    project: Path, deployment: Deployment
) -> None:
    """Selected without their asset (the UI's "Execute checks"), a model's SQLMesh audits run
    SQLMesh's own audit query on the environment's table, and its quality checks judge the
    warehouse; nothing is materialized."""
    write_ids(deployment, 10)
    assert deployment.run("*").success
    keys = [dg.AssetCheckKey(COUNTS_KEY, "not_null"), dg.AssetCheckKey(COUNTS_KEY, "volume_anomaly")]
    selection = dg.AssetSelection.checks(*keys)
    alone = deployment.run(selection)  # type: ignore[arg-type]
    assert alone.success and materialized_keys(alone) == set()
    checks = check_results(alone)
    assert set(checks) == {("t/counts", "not_null"), ("t/counts", "volume_anomaly")}
    assert checks[("t/counts", "not_null")].passed
    assert checks[("t/counts", "not_null")].metadata["failing_rows"].value == 0

    # a NULL id slipped into the model's table: the audit alone finds it, and it blocks
    with duckdb.connect(str(deployment.settings.data_dir / "warehouse.duckdb")) as con:
        [(schema, table)] = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name LIKE 't__counts__%' AND table_type = 'BASE TABLE'"
        ).fetchall()
        con.execute(f'INSERT INTO "{schema}"."{table}" VALUES (NULL, NULL)')
    failing = deployment.run(selection)  # type: ignore[arg-type]
    assert not failing.success and materialized_keys(failing) == set()
    audit = check_results(failing)[("t/counts", "not_null")]
    assert not audit.passed and audit.severity == dg.AssetCheckSeverity.ERROR
    assert audit.metadata["failing_rows"].value == 1 and "IS NULL" in audit.metadata["sql"].value.upper()
