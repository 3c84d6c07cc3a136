"""Transformation: every SQLMesh model of the configured project as a Dagster asset."""

import os

import dagster as dg

from pipelines.automation import automation_condition_for, freshness_policy_for
from pipelines.defs.quality import quality_settings
from pipelines.governance import with_classification_tags
from pipelines.releases import build_release, git_commit, write_release
from pipelines.resources import LakeResource
from pipelines.settings import Settings
from pipelines.sqlmesh_bridge import (
    ModelInfo,
    ProjectInfo,
    SQLMeshResource,
    SQLMeshTranslator,
    sqlmesh_assets,
)
from pipelines.sqlmesh_bridge.plan_outcome import PLAN_OUTCOME, PlanOutcome
from pipelines.sqlmesh_bridge.resource import ModelHook


class PipelinesTranslator(SQLMeshTranslator):
    """Our conventions on top of the bridge's defaults: columns carry their classification."""

    def __init__(self, classifications: dict[str, dict[str, str]] | None = None) -> None:
        self.classifications = classifications or {}

    def get_automation_condition(self, model: ModelInfo) -> dg.AutomationCondition | None:
        # one condition object per shape: building them costs ~1 ms each on large projects
        cache = self.__dict__.setdefault("_conditions", {})
        key = (model.time_partitioned, model.interval_unit, model.cron)
        if key not in cache:
            cache[key] = automation_condition_for(model, partitioned=None)
        return cache[key]

    def get_asset_spec(self, model: ModelInfo, project: ProjectInfo) -> dg.AssetSpec:
        spec = super().get_asset_spec(model, project)
        settings = quality_settings(project, model)
        policy = freshness_policy_for(model, settings.freshness_grace) if settings.freshness else None
        return spec.replace_attributes(freshness_policy=policy) if policy is not None else spec

    def get_column_schema(self, model: ModelInfo) -> dg.TableSchema:
        return with_classification_tags(
            super().get_column_schema(model), self.classifications.get(model.fqn, {})
        )


class PlanConfig(dg.Config):
    """``allow_breaking``: apply breaking model changes too (their history is recomputed)."""

    allow_breaking: bool = False


@dg.op(name="apply_sqlmesh_plan", pool="sqlmesh")
def sqlmesh_plan_op(
    context: dg.OpExecutionContext, config: PlanConfig, sqlmesh: SQLMeshResource, lake: LakeResource
) -> None:
    """Apply the project's model changes to the environment, with the plan in the logs, and
    record the release (``pipelines/releases.py``); each changed model's asset links to it."""
    try:
        outcome = sqlmesh.apply_plan(context.log, allow_breaking=config.allow_breaking)
    except dg.Failure as failure:
        applied = failure.metadata.get(PLAN_OUTCOME)
        if applied is not None:  # applied, but recomputing failed: the release happened all the same
            record_release(context, sqlmesh, lake, PlanOutcome.from_dict(applied.value), failure.description)
        raise
    context.log.info(f"plan applied: {outcome.summary}")
    if outcome.changes:
        record_release(context, sqlmesh, lake, outcome)


def record_release(
    context: dg.OpExecutionContext,
    sqlmesh: SQLMeshResource,
    lake: LakeResource,
    outcome: PlanOutcome,
    error: str | None = None,
) -> None:
    """Write the release record and markdown; point each changed model's asset at them."""
    tags = context.run.tags
    record = build_release(
        outcome,
        run_id=context.run_id,
        applied_by=tags.get("dagster/user") or tags.get("user") or f"job {context.run.job_name}",
        git_commit=git_commit(sqlmesh.project_dir),
        error=error,
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


@dg.job(name="sqlmesh_plan", description="Apply SQLMesh model changes to prod (the only way they get there).")
def sqlmesh_plan_job() -> None:
    sqlmesh_plan_op()


def build_defs(
    settings: Settings, project: ProjectInfo, translator: SQLMeshTranslator, hook: ModelHook | None = None
) -> dg.Definitions:
    """The models' multi-asset; ``hook`` (the quality checks) profiles and judges each model in
    the SQLMesh step. ``PIPELINES_PROFILE=0`` leaves it out (the benchmark measures its cost)."""
    if os.environ.get("PIPELINES_PROFILE", "1") == "0":
        hook = None
    assets = sqlmesh_assets(project, translator, model_hook=hook)
    return dg.Definitions(assets=[assets], jobs=[sqlmesh_plan_job])
