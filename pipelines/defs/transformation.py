"""Transformation: every SQLMesh model of the configured project as a Dagster asset."""

import logging
import os
from typing import Any

import dagster as dg

from pipelines.automation import automation_condition_for, freshness_policy_for
from pipelines.defs.quality import quality_settings
from pipelines.governance import with_classification_tags
from pipelines.quality import ProfileStore, TableProfile
from pipelines.quality.grain import grain_of
from pipelines.quality.profile import (
    asset_key_string,
    describe,
    latest_partition,
    profile_materialization,
    profile_metadata,
)
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
from pipelines.sqlmesh_bridge.resource import MetadataHook

log = logging.getLogger(__name__)
# kinds the hook does not profile: a view would run its whole query, an embedded model is no table
NOT_PROFILED = {"VIEW", "EMBEDDED"}


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


def _column_schema(con: Any, model: ModelInfo) -> dict[str, Any]:
    """A view's columns as the warehouse has them (for its schema-change check), without
    running the view's query."""
    table = f"{model.schema}.{model.table}"
    docs = {name: doc for name, _, doc in model.columns if doc}
    found = describe(con, table)
    columns = [dg.TableColumn(name, dtype, description=docs.get(name)) for name, dtype in found]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def profile_hook(settings: Settings | None = None) -> MetadataHook:
    """Profile what each materialization wrote (one SQL aggregate per model, per partition of
    the model's own grain) and append the run's profiles to the shared history with one write,
    through the SQLMesh run's own connection: the history table is in the warehouse's catalog.

    The metadata returned per model has the same size whatever the run's range (see
    ``profile_metadata``): the per-partition figures are in the history, not in the events.
    """

    def hook(
        ctx: Any, evaluated: list[tuple[ModelInfo, dg.AssetKey, list[str] | None]], run_id: str
    ) -> dict[str, dict[str, Any]]:
        con = ctx.engine_adapter.cursor
        profiled: dict[str, tuple[ModelInfo, dg.AssetKey, list[TableProfile]]] = {}
        out: dict[str, dict[str, Any]] = {}
        for model, key, partitions in evaluated:
            table = f"{model.schema}.{model.table}"
            try:
                if model.kind in NOT_PROFILED:
                    out[model.fqn] = _column_schema(con, model)
                    continue
                column, grain, keys = None, grain_of(model.interval_unit), None
                if model.time_partitioned:
                    column = model.time_column
                    keys = grain.run_keys(partitions[0], partitions[-1]) if partitions else None
                    if not keys:  # a run without a range: the newest partition is what it wrote
                        latest = latest_partition(con, table, column, grain)
                        keys = [latest] if latest else None
                profiles = profile_materialization(con, table, column, keys, grain)
            except Exception as exc:  # a profile informs; it never fails the run
                log.warning("no profile for %s: %s", model.fqn, exc)
                continue
            profiled[model.fqn] = (model, key, profiles)
        try:
            # tagged with the run: its profile checks reuse them instead of profiling again
            ProfileStore(con).record_many(
                {asset_key_string(k): p for _, k, p in profiled.values()}, run_id=run_id
            )
        except Exception as exc:
            log.warning("profiles not kept in the history (%s): the anomaly checks record their own", exc)
        for fqn, (model, _, p) in profiled.items():
            out[fqn] = profile_metadata(p, {name: doc for name, _, doc in model.columns if doc})
        return out

    return hook


def build_defs(settings: Settings, project: ProjectInfo, translator: SQLMeshTranslator) -> dg.Definitions:
    # PIPELINES_PROFILE=0 turns profiling off (the benchmark measures what it costs)
    hook = profile_hook(settings) if os.environ.get("PIPELINES_PROFILE", "1") != "0" else None
    assets = sqlmesh_assets(project, translator, metadata_hook=hook)
    return dg.Definitions(assets=[assets], jobs=[sqlmesh_plan_job])
