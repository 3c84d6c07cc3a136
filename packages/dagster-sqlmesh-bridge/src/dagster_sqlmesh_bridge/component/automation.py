"""Automation of one SQLMesh project's models, built from the loaded project.

Everything starts STOPPED unless the component's ``automation.default_status`` says RUNNING:
turning a schedule or sensor on is a decision per deployment (see docs/automation.md). Model
changes never ship from here: they reach prod only through the ``sqlmesh_plan`` job.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

import dagster as dg
from pydantic import model_validator

from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.schedules import build_catch_up_sensor, build_schedule, catch_up_keys, cron_groups
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

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
    # how many days back the catch-up sensor looks, and how long after a tick the newest
    # partition is left to the schedule
    catch_up_days: int = 7
    catch_up_grace_hours: float = 2.0
    # groups of daily assets the models read (e.g. ingestion) that a daily scheduled run carries
    upstream_groups: list[str] = []

    @model_validator(mode="after")
    def _sane(self) -> AutomationModel:
        if self.catch_up_days < 1 or self.catch_up_grace_hours < 0:
            raise ValueError("automation: catch_up_days must be >= 1 and catch_up_grace_hours >= 0")
        return self


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
    groups = cron_groups(project, translator, prefix=prefix, upstream_groups=tuple(settings.upstream_groups))
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
            build_catch_up_sensor(
                partitioned,
                name=f"{prefix}catch_up",
                default_status=sensor_status,
                lookback_days=settings.catch_up_days,
                grace=timedelta(hours=settings.catch_up_grace_hours),
            )
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
