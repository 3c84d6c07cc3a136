"""Unattended runs: cron schedules, catch-up, declarative automation, alerts (the shop's landing-file
sensor is in ``pipelines.shop.landing_sensor``).

``pipelines.component.automation.build_defs`` assembles them; the per-model policies
(:func:`automation_condition_for`, :func:`freshness_policy_for`) are attached by the translator.
"""

from pipelines.automation.alerts import build_failure_alert_sensor
from pipelines.automation.schedules import (
    RUN_RETRY_TAGS,
    CronGroup,
    automation_condition_for,
    build_catch_up_sensor,
    build_schedule,
    catch_up_keys,
    cron_groups,
    cron_string,
    freshness_policy_for,
)

__all__ = [
    "RUN_RETRY_TAGS",
    "CronGroup",
    "automation_condition_for",
    "build_catch_up_sensor",
    "build_failure_alert_sensor",
    "build_schedule",
    "catch_up_keys",
    "cron_groups",
    "cron_string",
    "freshness_policy_for",

]
