"""Automation of one SQLMesh project's models, built from the loaded project.

Everything starts STOPPED unless the component's ``automation.default_status`` says RUNNING:
turning a schedule or sensor on is a decision per deployment (see docs/automation.md). Model
changes never ship from here: they reach prod only through the ``sqlmesh_plan`` job. The
failure alerts and the shop's landing sensor are the code location's, not a project's
(``pipelines/defs/platform``, ``pipelines/defs/shop``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import dagster as dg

from pipelines.automation import build_catch_up_sensor, build_schedule, catch_up_keys, cron_groups
from pipelines.sqlmesh_bridge import ProjectInfo, SQLMeshTranslator

AUTOMATION_TAGS = (
    "dagster/schedule_name",
    "dagster/sensor_name",
    "dagster/auto_materialize",
    "dagster/from_automation_condition",
    "dagster/asset_evaluation_id",
)


def is_automated(tags: Mapping[str, str]) -> bool:
    """A run a schedule, sensor or automation condition launched (it computes what is due);
    any other run was launched by a person (it recomputes what it names)."""
    return any(tag in tags for tag in AUTOMATION_TAGS)


def launched_by_a_person(context: dg.AssetExecutionContext) -> bool:
    """The component's restate policy: a person's run (a backfill, a re-run from the UI)
    recomputes its window; automation computes only what is due."""
    return not is_automated(context.run.tags)


class AutomationModel(dg.Model):
    """What ``automation:`` accepts: which automation to build, and whether it starts on."""

    schedules: bool = True
    catch_up: bool = True
    declarative: bool = True
    default_status: Literal["STOPPED", "RUNNING"] = "STOPPED"


def build_defs(
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    settings: AutomationModel | None = None,
    prefix: str = "",
) -> dg.Definitions:
    """Schedules per model cron, catch-up and declarative automation of one project."""
    settings = settings or AutomationModel()
    running = settings.default_status == "RUNNING"
    schedule_status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    sensor_status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    groups = cron_groups(project, translator, prefix=prefix)
    jobs = {group.job_name: group.job() for group in groups}
    schedules = (
        [build_schedule(group, jobs[group.job_name], schedule_status) for group in groups]
        if settings.schedules
        else []
    )
    partitioned = [
        (group, jobs[group.job_name], catch_up_keys(group, project, translator))
        for group in groups
        if group.partitioned
    ]
    sensors: list[dg.SensorDefinition] = []
    if partitioned and settings.catch_up:
        sensors.append(
            build_catch_up_sensor(partitioned, name=f"{prefix}catch_up", default_status=sensor_status)
        )
    if settings.declarative:
        model_keys = [translator.get_asset_key(m) for m in project.internal_models]
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                f"{prefix}sqlmesh_automation",
                target=dg.AssetSelection.assets(*model_keys),
                default_status=sensor_status,
                description="Declarative automation of the SQLMesh models (schedules run them by default).",
            )
        )
    return dg.Definitions(jobs=list(jobs.values()), schedules=schedules, sensors=sensors)
