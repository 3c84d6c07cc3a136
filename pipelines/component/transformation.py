"""Transformation: every SQLMesh model of the configured project as a Dagster asset, the plan
job that deploys changes (and makes Dagster show what the plan built), and the mirror job that
makes Dagster's catalog show what SQLMesh's state holds."""

import importlib
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from pipelines.component.automation import launched_by_a_person
from pipelines.component.releases import build_release, git_commit, list_releases, write_release
from pipelines.component.translation import PipelinesTranslator
from pipelines.governance.raw_history import RawHistory
from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import Settings
from pipelines.sqlmesh_bridge import (
    ProjectInfo,
    SQLMeshResource,
    SQLMeshTranslator,
    sqlmesh_assets,
)
from pipelines.sqlmesh_bridge.hooks import ModelHook
from pipelines.sqlmesh_bridge.mirror import converge, held_intervals
from pipelines.sqlmesh_bridge.plan_outcome import PlanOutcome

__all__ = ["PipelinesTranslator", "PlanConfig", "build_defs", "build_mirror_job", "build_plan_job"]


class PlanConfig(dg.Config):
    """``allow_breaking``: apply breaking model changes too (their history is recomputed).
    ``forward_only``: deploy the changes forward-only (SQLMesh's forward-only plan): changed
    models keep their tables and history and the new logic applies to new intervals only; for
    when the raw history a recomputation needs is gone (the job refuses and says so)."""

    allow_breaking: bool = False
    forward_only: bool = False


def apply_plan(
    context: dg.OpExecutionContext,
    config: PlanConfig,
    sqlmesh: SQLMeshResource,
    lake: LakeResource,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    raw_contracts: str | None = None,
) -> None:
    """Apply the project's model changes with SQLMesh's plan, with the plan in the logs; record
    what it built as materializations (new versions under their new code version) and the
    release (``pipelines/component/releases.py``). A failure leaves the environment as it was."""
    if raw_contracts is None:
        context.log.info("no raw contracts declared for this project: the plan does not check raw history")
        history = None
    else:
        history = RawHistory(lake.get(), contracts=load_contracts(raw_contracts))
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
    release = outcome if outcome.changes else _unrecorded(outcome.last_applied, lake)
    if release is not None:
        record_release(context, sqlmesh, lake, release, project, translator)


def load_contracts(reference: str) -> Mapping[str, Any]:
    """The mapping ``module:attribute`` names (a project's raw source contracts)."""
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"raw_contracts: {reference!r} must be `module:attribute`")
    value = getattr(importlib.import_module(module), attribute)
    if not isinstance(value, Mapping):
        raise TypeError(f"raw_contracts: {reference} is a {type(value).__name__}, not a mapping")
    return value


def _unrecorded(last: PlanOutcome | None, lake: LakeResource) -> PlanOutcome | None:
    """The environment's last applied plan when no release records it (its first attempt
    failed after the views moved): the retry completes it."""
    if last is None or not last.changes or last.plan_id is None:
        return None
    if any(r.get("plan_id") == last.plan_id for r in list_releases(lake.get())):
        return None
    return last


def record_release(
    context: dg.OpExecutionContext,
    sqlmesh: SQLMeshResource,
    lake: LakeResource,
    outcome: PlanOutcome,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
) -> None:
    """Write the release record (markdown first, the JSON last: a record that exists is whole)
    and point each changed model's asset (the translator's key) at it."""
    tags = context.run.tags
    record = build_release(
        outcome,
        run_id=context.run_id,
        applied_by=tags.get("dagster/user") or tags.get("user") or f"job {context.run.job_name}",
        git_commit=git_commit(sqlmesh.project_dir),
    )
    store = lake.get()
    json_key, md_key = write_release(store, record)
    context.log.info(f"release {record['release_id']} recorded: {store.url(json_key)}")
    for change in outcome.changes:
        model = project.models.get(change.fqn)
        if change.new_version is None or model is None or not model.is_asset:  # removed: no asset any more
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=translator.get_asset_key(model),
                metadata={
                    "sqlmesh/release": dg.MetadataValue.path(store.url(md_key)),
                    "sqlmesh/release_record": dg.MetadataValue.path(store.url(json_key)),
                    "sqlmesh/release_id": record["release_id"],
                    "sqlmesh/change_category": change.change_category,
                    "sqlmesh/version": change.new_version,
                    "sqlmesh/fingerprint": change.new_fingerprint,
                },
            )
        )


def build_plan_job(
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    prefix: str = "",
    resource_key: str = "sqlmesh",
    raw_contracts: str | None = None,
) -> dg.JobDefinition:
    """The ``<prefix>sqlmesh_plan`` job of one SQLMesh project (its own resource key);
    ``raw_contracts`` (``module:attribute``) turns on the raw-history check."""

    @dg.op(name=f"apply_{prefix}sqlmesh_plan", pool="sqlmesh", required_resource_keys={resource_key, "lake"})
    def apply_plan_op(context: dg.OpExecutionContext, config: PlanConfig) -> None:
        sqlmesh = getattr(context.resources, resource_key)
        lake = context.resources.lake
        apply_plan(context, config, sqlmesh, lake, project, translator, raw_contracts)

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
    settings: Settings,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    hook: ModelHook | None = None,
    prefix: str = "",
    resource_key: str = "sqlmesh",
    raw_contracts: str | None = None,
) -> dg.Definitions:
    """The models' multi-asset; ``hook`` (the quality checks) profiles and judges each model in
    the SQLMesh step. ``PIPELINES_PROFILE=0`` leaves it out (the benchmark measures its cost)."""
    if os.environ.get("PIPELINES_PROFILE", "1") == "0":
        hook = None
    assets = sqlmesh_assets(
        project,
        translator,
        name=f"{prefix}sqlmesh_models",
        resource_key=resource_key,
        model_hook=hook,
        restate_when=launched_by_a_person,
    )
    jobs = [
        build_plan_job(project, translator, prefix, resource_key, raw_contracts),
        build_mirror_job(project, translator, prefix, resource_key),
    ]
    return dg.Definitions(assets=[assets], jobs=jobs)
