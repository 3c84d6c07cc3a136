"""Transformation: every SQLMesh model of the configured project as a Dagster asset."""

import os

import dagster as dg

from pipelines.component.releases import build_release, git_commit, write_release
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
from pipelines.sqlmesh_bridge.plan_outcome import PlanOutcome
from pipelines.sqlmesh_bridge.resource import ModelHook

__all__ = ["PipelinesTranslator", "PlanConfig", "build_defs", "build_plan_job", "sqlmesh_plan_job"]


class PlanConfig(dg.Config):
    """``allow_breaking``: apply breaking model changes too (their history is recomputed).
    ``forward_only``: deploy the changes forward-only (SQLMesh's forward-only plan): changed
    models keep their tables and history and the new logic applies to new intervals only; for
    when the raw history a recomputation needs is gone (the job refuses and says so)."""

    allow_breaking: bool = False
    forward_only: bool = False


def apply_plan(
    context: dg.OpExecutionContext, config: PlanConfig, sqlmesh: SQLMeshResource, lake: LakeResource
) -> None:
    """Apply the project's model changes to the environment, with the plan in the logs, and
    record the release (``pipelines/component/releases.py``); each changed model's asset links to it.
    New versions are built before the environment moves to them: a failure leaves it as it was,
    and no release is recorded."""
    outcome = sqlmesh.apply_plan(
        context.log,
        allow_breaking=config.allow_breaking,
        forward_only=config.forward_only,
        history=RawHistory(lake.get()),
    )
    context.log.info(f"plan applied: {outcome.summary}")
    if outcome.changes:
        record_release(context, sqlmesh, lake, outcome)


def record_release(
    context: dg.OpExecutionContext,
    sqlmesh: SQLMeshResource,
    lake: LakeResource,
    outcome: PlanOutcome,
) -> None:
    """Write the release record and markdown; point each changed model's asset at them."""
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
        if change.new_version is None:  # removed: no asset any more
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(change.model.split(".")),
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


def build_plan_job(prefix: str = "", resource_key: str = "sqlmesh") -> dg.JobDefinition:
    """The ``<prefix>sqlmesh_plan`` job of one SQLMesh project (its own resource key)."""

    @dg.op(name=f"apply_{prefix}sqlmesh_plan", pool="sqlmesh", required_resource_keys={resource_key, "lake"})
    def apply_plan_op(context: dg.OpExecutionContext, config: PlanConfig) -> None:
        apply_plan(context, config, getattr(context.resources, resource_key), context.resources.lake)

    @dg.job(
        name=f"{prefix}sqlmesh_plan",
        description="Apply SQLMesh model changes to prod (the only way they get there).",
    )
    def plan_job() -> None:
        apply_plan_op()

    return plan_job


sqlmesh_plan_job = build_plan_job()


def build_defs(
    settings: Settings,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    hook: ModelHook | None = None,
    prefix: str = "",
    resource_key: str = "sqlmesh",
) -> dg.Definitions:
    """The models' multi-asset; ``hook`` (the quality checks) profiles and judges each model in
    the SQLMesh step. ``PIPELINES_PROFILE=0`` leaves it out (the benchmark measures its cost)."""
    if os.environ.get("PIPELINES_PROFILE", "1") == "0":
        hook = None
    assets = sqlmesh_assets(
        project, translator, name=f"{prefix}sqlmesh_models", resource_key=resource_key, model_hook=hook
    )
    default = (prefix, resource_key) == ("", "sqlmesh")
    plan_job = sqlmesh_plan_job if default else build_plan_job(prefix, resource_key)
    return dg.Definitions(assets=[assets], jobs=[plan_job])
