"""Quality checks on the staging and mart tables, declared as data: one entry per table.

Severity ERROR makes the volume and null checks blocking (a failed check in the run that
materialized the table skips everything downstream); distribution drift on the marts only warns,
because a real business peak moves a mean too. See docs/quality.md for how to add a rule.
"""

from typing import Any

import dagster as dg

from pipelines.quality.checks import DRIFT, build_quality_checks, rules_from_config

QUALITY_RULES: dict[str, dict[str, Any]] = {
    "marts/daily_revenue": {
        "table": "marts.daily_revenue",
        "partition_column": "order_date",
        "watch": ["orders", "revenue_usd", "avg_order_value_usd", "cancelled_share"],
        "severity": "ERROR",
        "severity_overrides": {DRIFT: "WARN"},
        "freshness": "@daily",
    },
    "marts/fct_orders": {
        "table": "marts.fct_orders",
        "partition_column": "order_date",
        "watch": ["order_total_usd", "item_count"],
        "watch_nulls": ["customer_segment", "customer_country"],
        "sample": ["order_id", "order_date", "customer_id", "status"],
        "severity": "ERROR",
        "severity_overrides": {DRIFT: "WARN"},
        "freshness": "@daily",
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

quality_rules = rules_from_config(QUALITY_RULES)
quality_checks = build_quality_checks(quality_rules)
freshness_checks = [c for c in quality_checks if c.node_def.name == "quality_freshness"]

# Freshness matters most when nothing runs, so it needs its own clock: hourly, off by default
# (switch it on in the UI, or in prod through the automation the lead configures).
quality_freshness_job = dg.define_asset_job(
    "quality_freshness_job", selection=dg.AssetSelection.checks(*freshness_checks)
)
quality_freshness_schedule = dg.ScheduleDefinition(
    name="quality_freshness_schedule", cron_schedule="17 * * * *", job=quality_freshness_job
)

defs = dg.Definitions(
    asset_checks=quality_checks,
    jobs=[quality_freshness_job],
    schedules=[quality_freshness_schedule],
)
