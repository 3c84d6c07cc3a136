"""The code location's unattended pieces beyond a SQLMesh project's own automation: the failure
alerts (``alerts``). Schedules, catch-up and declarative automation per model cron are the
integration's (``dagster_sqlmesh_bridge.schedules``); the shop's landing-file sensor is in
``pipelines.shop.landing_sensor``.
"""

from pipelines.automation.alerts import build_failure_alert_sensor

__all__ = ["build_failure_alert_sensor"]
