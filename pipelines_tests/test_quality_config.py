"""``quality.yaml`` beside the models: every setting takes effect, every typo fails the load.

A typo fails when the definitions load (``dg check defs``, the code server), with the file,
the line and the rule in the message, not at 3 a.m. in a check.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from dagster_sqlmesh_bridge.quality.rules import QualityConfigError
from pipelines_tests.conftest import Deployment
from pipelines_tests.quality_project import check_specs as specs
from pipelines_tests.quality_project import write_quality_project


@pytest.fixture
def project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = write_quality_project(deployment.root, deployment.settings.data_dir)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    return project


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "models:\n  qa.order_daily:\n    severity: ERROR\n",
            2,
            "rule 'qa.order_daily': unknown model (did you mean qa.orders_daily?)",
        ),
        (
            "models:\n  qa.orders_daily:\n    severity: ERROR\n    treshold: 3\n",
            4,
            "rule 'qa.orders_daily': unknown setting 'treshold'",
        ),
        (
            "models:\n  qa.orders_daily:\n    null_columns: [amount, chanel]\n",
            3,
            "null_columns names unknown column 'chanel'",
        ),
        ("models:\n  qa.orders_daily:\n    severity: FATAL\n", 3, "severity must be WARN or ERROR"),
        (
            "models:\n  qa.orders_daily:\n    severity_overrides: {volume: ERROR}\n",
            3,
            "severity_overrides takes",
        ),
        ("defaults:\n  warmup: seven\n", 2, "rule 'defaults': warmup has the wrong type"),
        ("model:\n  qa.orders_daily: {}\n", 1, "unknown top-level key 'model'"),
    ],
)
def test_a_typo_fails_the_definitions_load_naming_file_line_and_rule(
    project: Path, deployment: Deployment, text: str, line: int, message: str
) -> None:
    (project / "quality.yaml").write_text(text)
    with pytest.raises(
        QualityConfigError, match=re.escape(f"quality.yaml:{line}: ") + ".*" + re.escape(message)
    ):
        deployment.definitions()


def test_every_setting_takes_effect(project: Path, deployment: Deployment) -> None:
    (project / "quality.yaml").write_text(
        """\
defaults:
  warmup: 5
models:
  qa.orders_daily:
    severity: ERROR
    severity_overrides: {distribution_drift: WARN}
    null_columns: [customer_id, channel]
    distribution_columns: [amount]
    sample_columns: [order_id, ds]
    volume_k: 6
    max_null_jump: 0.1
    drift_z: 5
    history_window: 28
    freshness_grace_hours: 2
  qa.payments_daily:
    ignore_columns: [method]
    freshness: false
  qa.events_hourly:
    checks: false
"""
    )
    from dagster_sqlmesh_bridge import SQLMeshTranslator, load_project
    from dagster_sqlmesh_bridge.component.quality import project_quality_config
    from dagster_sqlmesh_bridge.quality.rules import project_rules

    defs = deployment.definitions()
    found = specs(defs)
    assert found[("qa/orders_daily", "volume_anomaly")].blocking
    assert found[("qa/orders_daily", "null_drift")].blocking
    assert not found[("qa/orders_daily", "distribution_drift")].blocking
    assert "customer_id, channel" in (found[("qa/orders_daily", "null_drift")].description or "")
    assert "ignoring method" in (found[("qa/payments_daily", "null_drift")].description or "")
    assert ("qa/events_hourly", "volume_anomaly") not in found  # checks: false
    assert ("qa/events_hourly", "column_schema_change") in found  # the schema check stays
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["qa", "payments_daily"])).freshness_policy is None
    orders_policy = graph.get(dg.AssetKey(["qa", "orders_daily"])).freshness_policy
    assert orders_policy is not None and orders_policy.deadline_cron == "0 2 * * *"  # type: ignore[attr-defined]
    info = load_project(project)
    rules = {r.model: r for r in project_rules(info, SQLMeshTranslator(), project_quality_config(info))}
    orders = rules["qa.orders_daily"]
    assert (orders.warmup, orders.volume_k, orders.max_null_jump, orders.drift_z, orders.history_window) == (
        5,
        6.0,
        0.1,
        5.0,
        28,
    )
    assert orders.sample("amount") == ("order_id", "ds", "amount")
    assert orders.drift_columns({"amount": True, "customer_id": True}) == ("amount",)
    assert rules["qa.visits_weekly"].warmup == 5  # defaults apply to every model
    assert rules["qa.payments_daily"].null_columns(["ds", "method", "paid"]) == ("ds", "paid")
    assert timedelta(hours=2) == orders_policy.lower_bound_delta  # type: ignore[attr-defined]
