"""Quality checks on the staging and mart tables, declared as data: one entry per table.

Severity ERROR makes the volume and null checks blocking (a failed check in the run that
materialized the table skips everything downstream); distribution drift on the marts only warns,
because a real business peak moves a mean too. See docs/quality.md for how to add a rule.
"""

from typing import Any

import dagster as dg

from pipelines.quality.checks import DRIFT, build_quality_checks, rules_from_config
from pipelines.sqlmesh_bridge import ProjectInfo, SQLMeshTranslator

# The marts that stop downstream on a bad day: blocking volume and null checks, drift only warns.
BLOCKING_MART: dict[str, Any] = {
    "severity": "ERROR",
    "severity_overrides": {DRIFT: "WARN"},
    "freshness": "@daily",
}

QUALITY_RULES: dict[str, dict[str, Any]] = {
    "marts/daily_revenue": {
        "table": "marts.daily_revenue",
        "partition_column": "order_date",
        "watch": ["orders", "revenue_usd", "avg_order_value_usd", "cancelled_share"],
        **BLOCKING_MART,
    },
    "marts/fct_orders": {
        "table": "marts.fct_orders",
        "partition_column": "order_date",
        "watch": ["order_total_usd", "item_count"],
        "watch_nulls": ["customer_segment", "customer_country"],
        "sample": ["order_id", "order_date", "customer_id", "status"],
        **BLOCKING_MART,
    },
    "marts/category_sales": {
        "table": "marts.category_sales",
        "partition_column": "order_date",
        "watch": ["units", "revenue_usd"],
        "sample": ["order_date", "category"],
        "severity": "WARN",
        "freshness": "@daily",
    },
    "marts/web_funnel": {
        "table": "marts.web_funnel",
        "partition_column": "event_date",
        "watch": ["sessions", "conversion_rate"],
        "severity": "WARN",
        "freshness": "@daily",
    },
    "staging/stg_orders": {
        "table": "staging.stg_orders",
        "partition_column": "order_date",
        "watch_nulls": ["customer_id", "status", "currency"],
        "sample": ["order_id", "order_date"],
        "severity": "WARN",
    },
    "staging/stg_order_items": {
        "table": "staging.stg_order_items",
        "partition_column": "order_date",
        "watch": ["quantity", "unit_price"],
        "watch_nulls": ["product_id"],
        "sample": ["order_item_id", "order_id", "order_date"],
        "severity": "WARN",
    },
    "staging/stg_web_events": {
        "table": "staging.stg_web_events",
        "partition_column": "event_date",
        "watch_nulls": ["session_id", "event_type", "customer_id"],
        "sample": ["event_id", "event_date"],
        "severity": "WARN",
    },
}

# The declared rules as objects (tests and docs use them; build_defs filters them per project).
quality_rules = rules_from_config(QUALITY_RULES)


def build_defs(project: ProjectInfo, translator: SQLMeshTranslator) -> dg.Definitions:
    """Checks for the models this project really has: the declared rules whose table exists
    (freshness from the mart's own cron) and a schema-change check on every model asset."""
    models = {translator.get_asset_key(m).to_user_string(): m for m in project.internal_models}
    config = {}
    for key, rule in QUALITY_RULES.items():
        model = models.get(key)
        if model is None:
            continue
        config[key] = {**rule, "freshness": model.cron} if "freshness" in rule else dict(rule)
    rules = rules_from_config(config)
    covered = {r.asset_key for r in rules}
    others = [
        dg.AssetKey.from_user_string(k)
        for k in sorted(models)
        if dg.AssetKey.from_user_string(k) not in covered
    ]
    checks = build_quality_checks(rules, schema_change_assets=others)
    freshness = [c for c in checks if c.node_def.name == "quality_freshness"]
    jobs, schedules = [], []
    if freshness:
        # Freshness matters most when nothing runs, so it needs its own clock: hourly, off by
        # default (switch it on in the UI, or in prod through the automation config).
        job = dg.define_asset_job("quality_freshness_job", selection=dg.AssetSelection.checks(*freshness))
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(name="quality_freshness_schedule", cron_schedule="17 * * * *", job=job)
        )
    return dg.Definitions(asset_checks=checks, jobs=jobs, schedules=schedules)
