"""Automation for unattended incremental runs, built from the loaded SQLMesh project.

Everything starts STOPPED except the failure alerts: turning a schedule or sensor on is a
decision per deployment (see docs/automation.md). Model changes never ship from here: they
reach prod only through the ``sqlmesh_plan`` job.
"""

import dagster as dg

from pipelines.automation import (
    build_catch_up_sensor,
    build_failure_alert_sensor,
    build_landing_sensor,
    build_schedule,
    catch_up_keys,
    cron_groups,
    landing_job,
)
from pipelines.sqlmesh_bridge import ProjectInfo, SQLMeshTranslator


def build_defs(project: ProjectInfo, translator: SQLMeshTranslator, landing: bool = True) -> dg.Definitions:
    """Schedules per model cron, catch-up, alerts and declarative automation for any project;
    ``landing``: the bundled shop's file-drop sensor and its ingestion job too."""
    groups = cron_groups(project, translator)
    jobs = {group.job_name: group.job() for group in groups}
    schedules = [build_schedule(group, jobs[group.job_name]) for group in groups]
    partitioned = [
        (group, jobs[group.job_name], catch_up_keys(group, project, translator))
        for group in groups
        if group.partitioned
    ]
    sensors: list[dg.SensorDefinition] = [build_failure_alert_sensor()]
    extra_jobs = []
    if landing:
        ingest_landed = landing_job()
        sensors.append(build_landing_sensor(ingest_landed))
        extra_jobs.append(ingest_landed)
    if partitioned:
        sensors.append(build_catch_up_sensor(partitioned))
    model_keys = [translator.get_asset_key(m) for m in project.internal_models]
    sensors.append(
        dg.AutomationConditionSensorDefinition(
            "sqlmesh_automation",
            target=dg.AssetSelection.assets(*model_keys),
            default_status=dg.DefaultSensorStatus.STOPPED,
            description="Declarative automation of the SQLMesh models (off by default: schedules run them).",
        )
    )
    return dg.Definitions(jobs=[*jobs.values(), *extra_jobs], schedules=schedules, sensors=sensors)
