"""Quality checks on a project whose names a new user may well have: a schema named like the
DuckDB file (``warehouse.duckdb`` holding schema ``warehouse``: ``warehouse.orders`` is an
ambiguous reference in DuckDB), mixed case, reserved words, a dash and a dot in quoted names,
spaces in column names, and a model in a catalog that is not the default. Every profile check
computes (real row counts, no "could not profile"), a first run and a one-run backfill longer than the warm-up
raise nothing and say what they judged, and a check that cannot compute says why on the check
itself, keeping its severity: an ERROR check still blocks what comes after it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines_tests.conftest import Deployment, check_results

CONFIG = """\
gateways:
  local:
    connection:
      type: duckdb
      catalogs:
        warehouse: {data}/warehouse.duckdb
        other: {data}/other.duckdb
    state_connection:
      type: duckdb
      database: {state}
default_gateway: local
model_defaults:
  dialect: duckdb
  start: '2026-01-01'
  cron: '@daily'
"""
# 20 rows a weekday, 26 on Saturdays and Sundays: a normal weekly rhythm
ROWS = """FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), range(26) AS r(i)
WHERE i < 20 + CASE WHEN dayofweek(d) IN (0, 6) THEN 6 ELSE 0 END"""
MODELS = {
    # the catalog (the file's stem) and the schema share a name
    "orders": f"""MODEL (name warehouse.orders, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT d::DATE AS ds, i::INT AS order_id, (10 + (i % 7) * 1.5)::DOUBLE AS amount {ROWS}""",
    "mixed": f"""MODEL (name "MixedCase"."DailyOrders",
  kind INCREMENTAL_BY_TIME_RANGE (time_column "OrderDay"));
SELECT d::DATE AS "OrderDay", i::INT AS "Order_Id", (10 + (i % 7) * 1.5)::DOUBLE AS "Amount" {ROWS}""",
    "reserved": f"""MODEL (name "select"."from", kind INCREMENTAL_BY_TIME_RANGE (time_column "order"));
SELECT d::DATE AS "order", i::INT AS id, (10 + (i % 7) * 1.5)::DOUBLE AS "group" {ROWS}""",
    "dotted": f"""MODEL (name "my-schema"."my.table", kind INCREMENTAL_BY_TIME_RANGE (time_column "day of"));
SELECT d::DATE AS "day of", i::INT AS id, (10 + (i % 7) * 1.5)::DOUBLE AS "a b" {ROWS}""",
    "other": f"""MODEL (name other.sales.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT d::DATE AS ds, i::INT AS id, (10 + (i % 7) * 1.5)::DOUBLE AS amount {ROWS}""",
    "whole": """MODEL (name "group"."order", kind FULL);
SELECT count(*) AS n, sum(amount) AS amount FROM warehouse.orders""",
}
ORDERS = dg.AssetKey(["warehouse", "orders"])
DAILY = ("warehouse/orders", "mixedcase/dailyorders", "select/from", "my-schema/my.table", "sales/daily")
PROFILE_CHECKS = ("volume_anomaly", "null_drift", "distribution_drift")


def rows_on(day: str) -> int:
    from datetime import date

    return 26 if date.fromisoformat(day).weekday() >= 5 else 20


@pytest.fixture
def project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = deployment.root / "names_project"
    (root / "models").mkdir(parents=True)
    data = deployment.settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(CONFIG.format(data=data, state=deployment.root / "state.duckdb"))
    for name, sql in MODELS.items():
        (root / "models" / f"{name}.sql").write_text(sql + "\n")
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(root))
    return root


def profile_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {k: v for k, v in check_results(result).items() if k[1] in PROFILE_CHECKS}


def test_profile_checks_compute_on_any_name_and_raise_nothing_without_history(
    project: Path, deployment: Deployment
) -> None:
    defs = deployment.definitions()
    first = deployment.run("*", start="2026-01-01", end="2026-01-01", defs=defs)
    assert first.success
    checks = profile_results(first)
    assets = {k[0] for k in checks}
    assert assets == {
        "warehouse/orders",
        "mixedcase/dailyorders",
        "select/from",
        "my-schema/my.table",
        "sales/daily",
        "group/order",
    }, assets
    for (asset, check), evaluation in checks.items():
        text = evaluation.description or ""
        assert evaluation.passed, (asset, check, text)
        assert "could not" not in text and "computed" not in evaluation.metadata, (asset, check, text)
        assert evaluation.metadata["in_warmup"].value is True, (asset, check)
        assert "warm-up: 0 of 7 earlier partitions" in text, (asset, check, text)
    # real numbers from the warehouse: 2026-01-01 is a Thursday, 20 rows
    for asset in DAILY:
        assert checks[(asset, "volume_anomaly")].metadata["observed"].value == 20, asset
    assert checks[("group/order", "volume_anomaly")].metadata["observed"].value == 1
    drift = checks[("my-schema/my.table", "distribution_drift")]
    assert drift.metadata["column"].value == "a b"
    rows = {
        e.asset_key.to_user_string(): e.materialization.metadata["dagster/row_count"]
        for e in first.get_asset_materialization_events()
    }
    assert rows["warehouse/orders"].value == 20 and rows["sales/daily"].value == 20

    # one run of 20 days, longer than the warm-up: the first days warm up, the rest are judged
    # against the band of the days before them, and none of them fails
    backfill = deployment.run("*", start="2026-01-02", end="2026-01-21", defs=defs)
    assert backfill.success
    checks = profile_results(backfill)
    failed = {k: e.description for k, e in checks.items() if not e.passed}
    assert not failed, failed
    volume = checks[("warehouse/orders", "volume_anomaly")]
    assert volume.metadata["partitions_judged"].value == 20
    assert volume.metadata["partitions_in_warmup"].value == 6  # 1..6 earlier days: day 1 was recorded
    text = volume.description or ""
    assert text.startswith("20 partitions 2026-01-02 .. 2026-01-21: 6 not judged yet"), text
    assert "warm-up: 1..6 of 7" in text, text
    judged = "14 judged (2026-01-08 .. 2026-01-21) each against the band of its earlier partitions"
    assert f"{judged}, 0 outside it" in text, text
    assert "2026-01-21: row count = 20 within expected [" in text, text
    assert volume.metadata["observed"].value == rows_on("2026-01-21")
    for asset in ("mixedcase/dailyorders", "my-schema/my.table", "select/from", "sales/daily"):
        assert checks[(asset, "null_drift")].metadata["partitions_judged"].value == 20, asset


def test_checks_alone_profile_a_schema_named_like_the_catalog(project: Path, deployment: Deployment) -> None:
    """The UI's "Execute checks" judges the warehouse through a connection of its own, where
    ``warehouse.orders`` is just as ambiguous: it computes too."""
    assert deployment.run("*", start="2026-01-01", end="2026-01-02").success
    path = str(deployment.settings.data_dir / "warehouse.duckdb")
    with duckdb.connect(path, read_only=True) as con, pytest.raises(duckdb.BinderException, match="Ambig"):
        con.execute("SELECT count(*) FROM warehouse.orders")
    selection = dg.AssetSelection.checks(*(dg.AssetCheckKey(ORDERS, c) for c in PROFILE_CHECKS))
    alone = deployment.run(selection)  # type: ignore[arg-type]
    assert alone.success
    checks = profile_results(alone)
    assert set(checks) == {("warehouse/orders", c) for c in PROFILE_CHECKS}
    assert all(e.passed and "computed" not in e.metadata for e in checks.values())
    assert checks[("warehouse/orders", "volume_anomaly")].metadata["observed"].value == 20  # 2026-01-02, Fri


def test_a_check_that_cannot_compute_says_why_on_the_check_and_an_error_rule_still_blocks(
    project: Path, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object store fails the profile query of one model whose checks are ERROR: each of its
    checks fails with the error and the model in what the UI shows, ERROR stays ERROR, so the
    step after the SQLMesh step does not run; the run's log names the model once."""
    from dagster_sqlmesh_bridge.quality import step

    (project / "quality.yaml").write_text("models:\n  warehouse.orders:\n    severity: ERROR\n")
    after: list[str] = []

    @dg.asset(deps=[ORDERS])
    def report() -> None:  # a step after the SQLMesh step, reading the checked table
        after.append("ran")

    defs = dg.Definitions.merge(deployment.definitions(), dg.Definitions(assets=[report]))
    real = step.profile_materialization

    def failing(con: duckdb.DuckDBPyConnection, table: str, *args: object, **kwargs: object) -> object:
        if table == '"warehouse"."warehouse"."orders"':
            raise duckdb.IOException("HTTP 503 (Slow Down) reading s3://lake/warehouse/orders.parquet")
        return real(con, table, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(step, "profile_materialization", failing)  # fault injection only
    result = deployment.run("*", start="2026-01-01", end="2026-01-01", defs=defs)
    assert not result.success and after == []

    records = deployment.instance.all_logs(result.run_id)  # what the UI reads
    events = [r.dagster_event for r in records if r.dagster_event is not None]
    evaluations = {
        (
            e.event_specific_data.asset_key.to_user_string(),
            e.event_specific_data.check_name,
        ): e.event_specific_data
        for e in events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    for check in PROFILE_CHECKS:
        evaluation = evaluations[("warehouse/orders", check)]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR, check
        assert evaluation.metadata["model"].value == "warehouse.orders"
        assert evaluation.metadata["table"].value == '"warehouse"."warehouse"."orders"'
        assert evaluation.metadata["error"].value.startswith("IOException: HTTP 503 (Slow Down)")
        assert evaluation.metadata["computed"].value is False
        description = evaluation.description or ""
        assert description.startswith(f"could not compute {check} of warehouse.orders: IOException: HTTP 503")
    assert evaluations[("sales/daily", "volume_anomaly")].passed  # the other models are judged as usual
    said = [
        r.user_message for r in records if r.dagster_event is None and "could not compute" in r.user_message
    ]
    assert len(said) == 1 and "warehouse.orders" in said[0] and "HTTP 503" in said[0], said
    failure = next(e for e in events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "sqlmesh_models" and "blocking asset check" in str(failure.event_specific_data)
    assert "report" not in {e.step_key for e in events if e.event_type_value == "STEP_START"}


PROD_CONFIG = """\
from sqlmesh.core.config import Config, ModelDefaultsConfig

from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.sqlmesh_gateways import prod_gateway

install_extensions()
config = Config(
    gateways={"prod": prod_gateway()},
    default_gateway="prod",
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start="2026-01-01", cron="@daily"),
)
"""
PROD_MODELS = {
    # the DuckLake catalog is ``lake``: a schema of the same name makes ``lake.orders`` ambiguous
    "orders": MODELS["orders"].replace("warehouse.orders", "lake.orders"),
    "reserved": MODELS["reserved"],
    "whole": MODELS["whole"].replace("warehouse.orders", "lake.orders"),
}


def test_on_the_prod_stack_a_ducklake_catalog_is_profiled_whatever_its_names(
    prod: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckLake catalog in PostgreSQL, data on the S3 server: the same names are profiled in the
    SQLMesh step and by checks run alone (another connection, ``USE lake``), with no false alarm."""
    root = prod.root / "lake_project"
    (root / "models").mkdir(parents=True)
    (root / "config.py").write_text(PROD_CONFIG)
    for name, sql in PROD_MODELS.items():
        (root / "models" / f"{name}.sql").write_text(sql + "\n")
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(root))
    defs = prod.definitions()
    first = prod.run("*", start="2026-01-01", end="2026-01-10", defs=defs)
    assert first.success
    checks = profile_results(first)
    assert {k[0] for k in checks} == {"lake/orders", "select/from", "group/order"}
    failed = {k: e.description for k, e in checks.items() if not e.passed or "computed" in e.metadata}
    assert not failed, failed
    volume = checks[("lake/orders", "volume_anomaly")]
    assert volume.metadata["partitions_judged"].value == 10
    assert volume.metadata["partitions_in_warmup"].value == 7
    assert volume.metadata["observed"].value == rows_on("2026-01-10")  # a Saturday: 26 rows
    assert "3 judged (2026-01-08 .. 2026-01-10)" in (volume.description or "")
    assert checks[("group/order", "volume_anomaly")].metadata["observed"].value == 1

    keys = [dg.AssetCheckKey(dg.AssetKey(["lake", "orders"]), c) for c in PROFILE_CHECKS]
    alone = prod.run(dg.AssetSelection.checks(*keys), defs=defs)  # type: ignore[arg-type]
    assert alone.success
    verdicts = profile_results(alone)
    assert set(verdicts) == {("lake/orders", c) for c in PROFILE_CHECKS}
    assert all(v.passed and "computed" not in v.metadata for v in verdicts.values())
    assert verdicts[("lake/orders", "volume_anomaly")].metadata["partition"].value == "2026-01-10"
