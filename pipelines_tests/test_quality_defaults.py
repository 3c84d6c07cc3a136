"""Quality checks on a SQLMesh project this code location has never seen, with no configuration.

``quality_project`` has hourly, quarter-hourly, daily, weekly-cron and monthly incremental
models, FULL, VIEW, SEED, SCD type 2 and INCREMENTAL_BY_UNIQUE_KEY models: every one gets its
default checks, a normal month raises nothing, and each seeded anomaly is caught on the model it
was seeded in and nowhere else.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.quality_project import (
    PRODUCTS_WITHOUT_CATEGORY,
    write_quality_project,
    write_sources,
)

SCHEMA_CHECK = "column_schema_change"
PER_PARTITION = {"volume_anomaly", "null_drift", "distribution_drift", SCHEMA_CHECK}
ACROSS_RUNS = {"volume_anomaly", SCHEMA_CHECK}
EXPECTED = {
    "qa/events_hourly": PER_PARTITION,
    "qa/clicks_quarter": PER_PARTITION,
    "qa/orders_daily": PER_PARTITION,
    "qa/payments_daily": PER_PARTITION,
    "qa/visits_weekly": PER_PARTITION,
    "qa/invoices_monthly": PER_PARTITION,
    "qa/products": ACROSS_RUNS,
    "qa/customers_scd": ACROSS_RUNS,
    "qa/accounts": ACROSS_RUNS,
    "qa/payments_view": {SCHEMA_CHECK},
    "qa/channels": {SCHEMA_CHECK},
}
MODELS = [dg.AssetKey.from_user_string(k) for k in EXPECTED]


@pytest.fixture
def qa(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = write_quality_project(deployment.root, deployment.settings.data_dir)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    return project


def check_names(defs: dg.Definitions) -> dict[str, set[str]]:
    graph = defs.resolve_asset_graph()
    names: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        names.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    return names


def test_every_model_gets_its_default_checks_and_freshness(qa: Path, deployment: Deployment) -> None:
    defs = deployment.definitions()
    dg.Definitions.validate_loadable(defs)
    names = check_names(defs)
    for key, expected in EXPECTED.items():
        assert names.get(key, set()) == expected, key
    graph = defs.resolve_asset_graph()
    for key in MODELS:
        policy = graph.get(key).freshness_policy
        has_policy = key.path[-1] not in ("payments_view", "channels")
        assert (policy is not None) == has_policy, key
    specs = {
        (s.asset_key.to_user_string(), s.name): s
        for c in defs.asset_checks or []
        for s in getattr(c, "check_specs", [])
    }
    assert all(not s.blocking for k, s in specs.items() if k[0].startswith("qa/")), "all WARN by default"
    # distribution drift watches measures, not keys: amount yes, order_id/customer_id no
    drift = specs[("qa/orders_daily", "distribution_drift")].description or ""
    assert "numeric non-key" in drift


def failing(result: dg.ExecuteInProcessResult) -> set[tuple[str, str]]:
    return {key for key, evaluation in check_results(result).items() if not evaluation.passed}


@pytest.mark.slow
def test_seeded_anomalies_are_caught_where_they_were_seeded_and_nowhere_else(
    qa: Path, deployment: Deployment
) -> None:
    data_dir = deployment.settings.data_dir
    write_sources(data_dir, date(2026, 1, 1), date(2026, 2, 28))
    selection = dg.AssetSelection.assets(*MODELS)
    normal = deployment.run(selection, start="2026-01-01", end="2026-01-31")  # type: ignore[arg-type]
    assert normal.success
    evaluations = check_results(normal)
    assert {k[0] for k in evaluations} >= {k for k, v in EXPECTED.items() if "volume_anomaly" in v}
    assert failing(normal) == set(), {k: evaluations[k].description for k in failing(normal)}
    judged = evaluations[("qa/orders_daily", "volume_anomaly")]
    assert judged.metadata["partitions"].value["2026-01-31"]["in_warmup"] is False

    # a day with 10x the orders and half the payment methods NULL
    write_sources(
        data_dir, date(2026, 1, 1), date(2026, 2, 28), spike=date(2026, 2, 1), null_day=date(2026, 2, 1)
    )
    seeded = deployment.run(selection, start="2026-02-01")  # type: ignore[arg-type]
    assert seeded.success  # WARN checks report, they do not fail the run
    results = check_results(seeded)
    assert failing(seeded) == {("qa/orders_daily", "volume_anomaly"), ("qa/payments_daily", "null_drift")}
    assert results[("qa/payments_daily", "null_drift")].metadata["column"].value == "method"
    assert results[("qa/orders_daily", "volume_anomaly")].severity == dg.AssetCheckSeverity.WARN

    # a dropped column: the change goes through the plan job, then the next run reports it
    (qa / "models" / "products.sql").write_text(PRODUCTS_WITHOUT_CATEGORY + "\n")
    defs = deployment.definitions()
    plan = defs.resolve_job_def("sqlmesh_plan").execute_in_process(
        instance=deployment.instance,
        run_config={"ops": {"apply_sqlmesh_plan": {"config": {"allow_breaking": True}}}},
        raise_on_error=False,
    )
    assert plan.success
    write_sources(data_dir, date(2026, 1, 1), date(2026, 2, 28))
    dropped = deployment.run(selection, start="2026-02-02", defs=defs)  # type: ignore[arg-type]
    assert dropped.success
    assert failing(dropped) == {("qa/products", SCHEMA_CHECK)}
    assert "category" in (check_results(dropped)[("qa/products", SCHEMA_CHECK)].description or "")
