"""Transformation: every SQLMesh model of the project as a Dagster asset, the plan job that
deploys changes (and makes Dagster show what the plan built), and the mirror job that makes
Dagster's catalog show what SQLMesh's state holds.

What a deployment adds around a plan (a raw-history check before it, a release record after it)
comes in as a :class:`PlanExtension`; the integration itself records each changed model's new
version on its asset.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge.assets import sqlmesh_assets
from dagster_sqlmesh_bridge.component.automation import launched_by_a_person
from dagster_sqlmesh_bridge.hooks import HistoryCheck, ModelHook
from dagster_sqlmesh_bridge.mirror import converge, held_intervals
from dagster_sqlmesh_bridge.plan_outcome import PlanOutcome
from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.resource import SQLMeshResource
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

__all__ = ["PlanConfig", "PlanExtension", "build_defs", "build_mirror_job", "build_plan_job"]


class PlanConfig(dg.Config):
    """``allow_breaking``: apply breaking model changes too (their history is recomputed).
    ``forward_only``: deploy the changes forward-only (SQLMesh's forward-only plan): changed
    models keep their tables and history and the new logic applies to new intervals only; for
    when the history a recomputation needs is gone (the job refuses and says so)."""

    allow_breaking: bool = False
    forward_only: bool = False


Recorder = Callable[
    [dg.OpExecutionContext, SQLMeshResource, PlanOutcome, ProjectInfo, SQLMeshTranslator], None
]


@dataclass(frozen=True)
class PlanExtension:
    """What a deployment does around the plan job's plan.

    ``history``: the check that refuses to rebuild days whose inputs are gone (``None``: none).
    ``record``: called after the plan applied, with the outcome (a platform writes a release
    record; the default records each changed model's new version on its asset).
    ``resource_keys``: the resources these two need."""

    history: Callable[[dg.OpExecutionContext], HistoryCheck | None] | None = None
    record: Recorder | None = None
    resource_keys: frozenset[str] = frozenset()


def apply_plan(
    context: dg.OpExecutionContext,
    config: PlanConfig,
    sqlmesh: SQLMeshResource,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    extension: PlanExtension = PlanExtension(),
) -> PlanOutcome:
    """Apply the project's model changes with SQLMesh's plan, with the plan in the logs; record
    what it built as materializations (new versions under their new code version). A failure
    leaves the environment as it was."""
    history = extension.history(context) if extension.history is not None else None
    if history is None:
        context.log.info("no history check for this project: the plan does not check its inputs' history")
    outcome = sqlmesh.apply_plan(
        context.log,
        allow_breaking=config.allow_breaking,
        forward_only=config.forward_only,
        history=history,
    )
    context.log.info(f"plan applied: {outcome.summary}")
    renewed = {c.fqn for c in outcome.changes if c.new_version is not None}
    events, report = converge(
        context.instance, project, translator, outcome.held, f"built by plan run {context.run_id}", renewed
    )
    for event in events:
        context.log_event(event)
    for line in report.lines():
        context.log.info(line)
    (extension.record or record_versions)(context, sqlmesh, outcome, project, translator)
    return outcome


def record_versions(
    context: dg.OpExecutionContext,
    sqlmesh: SQLMeshResource,
    outcome: PlanOutcome,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Each changed model's asset notes the plan that changed it (SQLMesh's plan id), the
    change category and the new version (and ``extra_metadata``, e.g. a release record)."""
    for change in outcome.changes:
        model = project.models.get(change.fqn)
        if change.new_version is None or model is None or not model.is_asset:  # removed: no asset any more
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=translator.get_asset_key(model),
                metadata={
                    "sqlmesh/plan_id": outcome.plan_id or "",
                    "sqlmesh/change_category": change.change_category,
                    "sqlmesh/version": change.new_version,
                    "sqlmesh/fingerprint": change.new_fingerprint,
                    **(extra_metadata or {}),
                },
            )
        )


def build_plan_job(
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    prefix: str = "",
    resource_key: str = "sqlmesh",
    extension: PlanExtension = PlanExtension(),
) -> dg.JobDefinition:
    """The ``<prefix>sqlmesh_plan`` job of one SQLMesh project (its own resource key)."""

    @dg.op(
        name=f"apply_{prefix}sqlmesh_plan",
        pool="sqlmesh",
        required_resource_keys={resource_key, *extension.resource_keys},
    )
    def apply_plan_op(context: dg.OpExecutionContext, config: PlanConfig) -> None:
        apply_plan(context, config, getattr(context.resources, resource_key), project, translator, extension)

    @dg.job(
        name=f"{prefix}sqlmesh_plan",
        description="Apply SQLMesh model changes to prod (the only way they get there).",
    )
    def plan_job() -> None:
        apply_plan_op()

    return plan_job


def build_mirror_job(
    project: ProjectInfo, translator: SQLMeshTranslator, prefix: str = "", resource_key: str = "sqlmesh"
) -> dg.JobDefinition:
    """The ``<prefix>sqlmesh_mirror`` job: Dagster's partitions made to show what SQLMesh's
    state holds (after a ``sqlmesh plan`` applied outside Dagster, or any drift); it says what
    it changed and what it cannot (partitions Dagster shows that SQLMesh does not hold)."""

    @dg.op(name=f"mirror_{prefix}sqlmesh_state", required_resource_keys={resource_key})
    def mirror_op(context: dg.OpExecutionContext) -> None:
        sqlmesh: SQLMeshResource = getattr(context.resources, resource_key)
        ctx = sqlmesh.context()
        try:
            held = held_intervals(ctx, sqlmesh.environment)
        finally:
            sqlmesh.close(ctx)
        events, report = converge(
            context.instance, project, translator, held, f"recorded by mirror run {context.run_id}"
        )
        for event in events:
            context.log_event(event)
        for line in report.lines():
            context.log.info(line)

    @dg.job(
        name=f"{prefix}sqlmesh_mirror",
        description="Make Dagster's catalog show the intervals SQLMesh's state holds, and report drift.",
    )
    def mirror_job() -> None:
        mirror_op()

    return mirror_job


def build_defs(
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    hook: ModelHook | None = None,
    prefix: str = "",
    resource_key: str = "sqlmesh",
    extension: PlanExtension = PlanExtension(),
) -> dg.Definitions:
    """The models' multi-asset; ``hook`` (the quality checks) profiles and judges each model in
    the SQLMesh step."""
    assets = sqlmesh_assets(
        project,
        translator,
        name=f"{prefix}sqlmesh_models",
        resource_key=resource_key,
        model_hook=hook,
        restate_when=launched_by_a_person,
    )
    jobs = [
        build_plan_job(project, translator, prefix, resource_key, extension),
        build_mirror_job(project, translator, prefix, resource_key),
    ]
    return dg.Definitions(assets=[assets], jobs=jobs)
