"""Quality checks on a SQLMesh project this code location has never seen, with no configuration.

``quality_project`` has hourly, quarter-hourly, daily, weekly-cron and monthly incremental
models, FULL, VIEW, SEED, SCD type 2 and INCREMENTAL_BY_UNIQUE_KEY models: every one gets its
default checks, a normal month raises nothing, and each seeded anomaly is caught on the model it
was seeded in and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from dagster_sqlmesh_bridge import load_project
from dagster_sqlmesh_bridge.partition_runs import keys_within_days, split_by_partitions
from dagster_sqlmesh_bridge.quality.rules import key_columns, load_quality_config, rule_for
from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.quality_project import (
    PRODUCTS_WITHOUT_CATEGORY,
    check_specs,
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
    specs = check_specs(defs)
    assert all(not s.blocking for k, s in specs.items() if k[0].startswith("qa/")), "all WARN by default"
    # distribution drift watches measures, not keys: amount yes, order_id/customer_id no
    drift = specs[("qa/orders_daily", "distribution_drift")].description or ""
    assert "numeric non-key" in drift


@dataclass
class Runs:
    """The runs of one day range: one per partitions definition
    (``dagster_sqlmesh_bridge.partition_runs``)."""

    results: list[dg.ExecuteInProcessResult]
    # the partition keys each model's run was for
    spans: dict[str, tuple[str, str] | None]

    @property
    def success(self) -> bool:
        return bool(self.results) and all(r.success for r in self.results)

    def checks(self) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
        return {k: v for r in self.results for k, v in check_results(r).items()}


def run_days(
    deployment: Deployment, first: str, last: str | None = None, defs: dg.Definitions | None = None
) -> Runs:
    """Every model of the fixture project for the days ``first``..``last``, the way
    ``pipelines run`` runs a range: hourly, quarter-hourly, daily, monthly models and the
    unpartitioned ones each in a run of their own, each for its own partitions in those days."""
    defs = defs or deployment.definitions()
    graph = defs.resolve_asset_graph()
    results, spans = [], {}
    for part in split_by_partitions(graph, MODELS):
        span = None
        if part.partitions_def is not None:
            keys = keys_within_days(
                part.partitions_def, date.fromisoformat(first), date.fromisoformat(last or first)
            )
            if not keys:
                continue
            span = (keys[0], keys[-1])
        spans.update({k.to_user_string(): span for k in part.keys})
        start, end = span or (None, None)
        results.append(deployment.run(list(part.keys), start=start, end=end, defs=defs))
    return Runs(results, spans)


def failing(runs: Runs) -> set[tuple[str, str]]:
    return {key for key, evaluation in runs.checks().items() if not evaluation.passed}


def test_a_mixed_grain_project_runs_one_partitions_definition_per_run(
    qa: Path, deployment: Deployment
) -> None:
    """Hourly, quarter-hourly, daily and monthly models cannot share a Dagster run: the split
    gives each definition its run, in dependency order, with the keys of its own grain."""
    graph = deployment.definitions().resolve_asset_graph()
    parts = split_by_partitions(graph, MODELS)
    assert len(parts) == 5  # hour, quarter hour, day, month, unpartitioned
    for part in parts:
        assert len({graph.get(k).partitions_def for k in part.keys}) == 1
    order = [k for p in parts for k in p.keys]
    view, daily = dg.AssetKey(["qa", "payments_view"]), dg.AssetKey(["qa", "payments_daily"])
    assert order.index(daily) < order.index(view)  # the view's run comes after its parent's
    hourly = graph.get(dg.AssetKey(["qa", "events_hourly"])).partitions_def
    monthly = graph.get(dg.AssetKey(["qa", "invoices_monthly"])).partitions_def
    assert keys_within_days(hourly, date(2026, 2, 1), date(2026, 2, 1))[::23] == [
        "2026-02-01-00:00",
        "2026-02-01-23:00",
    ]
    assert keys_within_days(monthly, date(2026, 1, 1), date(2026, 1, 31)) == ["2026-01-01"]
    assert keys_within_days(monthly, date(2026, 2, 1), date(2026, 2, 1)) == []


@pytest.mark.slow
def test_seeded_anomalies_are_caught_where_they_were_seeded_and_nowhere_else(
    qa: Path, deployment: Deployment
) -> None:
    data_dir = deployment.settings.data_dir
    write_sources(data_dir, date(2026, 1, 1), date(2026, 2, 28))
    normal = run_days(deployment, "2026-01-01", "2026-01-31")
    assert normal.success
    evaluations = normal.checks()
    assert {k[0] for k in evaluations} >= {k for k, v in EXPECTED.items() if "volume_anomaly" in v}
    assert failing(normal) == set(), {k: evaluations[k].description for k in failing(normal)}
    judged = evaluations[("qa/orders_daily", "volume_anomaly")].metadata
    assert judged["partition"].value == "2026-01-31" and judged["in_warmup"].value is False
    assert judged["partitions_judged"].value == 31 and judged["partitions_in_warmup"].value == 7

    # each model's checks judged the partitions of its own grain that its run wrote
    def span(asset: str, check: str) -> tuple[int, str, str]:
        md = evaluations[(asset, check)].metadata
        return md["partitions_judged"].value, md["first_partition"].value, md["last_partition"].value

    assert span("qa/events_hourly", "volume_anomaly") == (31 * 24, "2026-01-01-00:00", "2026-01-31-23:00")
    assert span("qa/clicks_quarter", "null_drift") == (31 * 96, "2026-01-01-00:00", "2026-01-31-23:45")
    month = evaluations[("qa/invoices_monthly", "volume_anomaly")].metadata
    assert month["partition"].value == "2026-01-01"
    assert normal.spans["qa/invoices_monthly"] == ("2026-01-01", "2026-01-01")

    # a day with 10x the orders and half the payment methods NULL
    write_sources(
        data_dir, date(2026, 1, 1), date(2026, 2, 28), spike=date(2026, 2, 1), null_day=date(2026, 2, 1)
    )
    seeded = run_days(deployment, "2026-02-01")
    assert seeded.success  # WARN checks report, they do not fail the run
    results = seeded.checks()
    assert results[("qa/events_hourly", "volume_anomaly")].passed  # 24 normal hours
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
    dropped = run_days(deployment, "2026-02-02", defs=defs)
    assert dropped.success
    assert failing(dropped) == {("qa/products", SCHEMA_CHECK)}
    assert "category" in (dropped.checks()[("qa/products", SCHEMA_CHECK)].description or "")


def test_declared_grains_and_unique_keys_are_keys_not_measures(tmp_path: Path) -> None:
    """The bridge's ModelInfo carries the model's ``grains`` and its kind's ``unique_key``, and
    distribution drift leaves those columns alone even when their names look like measures."""
    project = write_quality_project(tmp_path, tmp_path / "data")
    (project / "models" / "tickets.sql").write_text(
        "MODEL (name qa.tickets, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), grains (ds, seat));\n"
        "SELECT ds, payment_id::INT AS seat, paid AS price FROM src.payments "
        "WHERE ds BETWEEN @start_ds AND @end_ds\n"
    )
    (project / "models" / "ledger.sql").write_text(
        "MODEL (name qa.ledger, kind INCREMENTAL_BY_UNIQUE_KEY (unique_key (entry, coalesce(slot, 0))));\n"
        "SELECT account_id::INT AS entry, 1 AS slot, balance FROM src.accounts\n"
    )
    info = load_project(project)
    tickets = next(m for m in info.internal_models if m.name == "qa.tickets")
    ledger = next(m for m in info.internal_models if m.name == "qa.ledger")
    assert tickets.grains == ["ds", "seat"] and ledger.unique_key == ["entry", "slot"]
    assert set(key_columns(tickets)) == {"ds", "seat"}  # price is the one measure
    assert set(key_columns(ledger)) == {"entry", "slot"}
    rule = rule_for(tickets, dg.AssetKey(["qa", "tickets"]), load_quality_config(info).settings_for(tickets))
    assert rule is not None and rule.drift_columns({"ds": False, "seat": True, "price": True}) == ("price",)
