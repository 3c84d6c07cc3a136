"""The ``multi_asset`` with one asset per SQLMesh model."""

from collections.abc import Callable, Iterator

import dagster as dg

from dagster_sqlmesh_bridge.hooks import ModelHook
from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.reporting import Event
from dagster_sqlmesh_bridge.resource import SQLMeshResource
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

# Decides from a run (its tags: who launched it) whether it recomputes what SQLMesh holds.
RestatePolicy = Callable[[dg.AssetExecutionContext], bool]
# A run tagged ``"false"`` restates its selection only, not the models downstream of it (for a
# caller that marked exactly what to recompute itself, as the file repair does).
RESTATE_DOWNSTREAM_TAG = "sqlmesh/restate_downstream"


class SQLMeshRunConfig(dg.Config):
    """``restate``: recompute the run's window even if SQLMesh holds it (the selected models
    and their downstream, as SQLMesh's restatement does); unset, the asset's restate policy
    decides (none: compute only what is due)."""

    restate: bool | None = None


def sqlmesh_assets(
    project: ProjectInfo,
    translator: SQLMeshTranslator | None = None,
    name: str = "sqlmesh_models",
    pool: str | None = "sqlmesh",
    resource_key: str = "sqlmesh",
    model_hook: ModelHook | None = None,
    restate_when: RestatePolicy | None = None,
) -> dg.AssetsDefinition:
    """One asset per model; ``model_hook`` adds metadata (a profile...) and its own checks to
    each materialization; ``restate_when`` says which runs recompute (e.g. those a person
    launched), when the run's config does not say."""
    translator = translator or SQLMeshTranslator()
    models = project.internal_models
    specs = [translator.get_asset_spec(m, project) for m in models]
    check_specs = [spec for m in models for spec in translator.get_check_specs(m, project)]
    if model_hook is not None:
        check_specs += model_hook.check_specs()

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=pool,
        required_resource_keys={resource_key},
    )
    def _sqlmesh_models(context: dg.AssetExecutionContext, config: SQLMeshRunConfig) -> Iterator[Event]:
        resource: SQLMeshResource = getattr(context.resources, resource_key)
        restate = config.restate
        if restate is None:
            restate = restate_when(context) if restate_when is not None else False
        downstream = context.run.tags.get(RESTATE_DOWNSTREAM_TAG, "true").lower() != "false"
        yield from resource.run(
            context, project, translator, restate=restate, model_hook=model_hook, downstream=downstream
        )

    return _sqlmesh_models


def sqlmesh_external_specs(
    project: ProjectInfo,
    translator: SQLMeshTranslator | None = None,
    exclude: set[dg.AssetKey] | frozenset[dg.AssetKey] = frozenset(),
) -> list[dg.AssetSpec]:
    """External assets for the tables the models read but SQLMesh does not build (declared
    external models and tables referenced but defined nowhere), except keys in ``exclude``
    (assets another part of the code location builds, e.g. ingestion)."""
    translator = translator or SQLMeshTranslator()
    specs = [translator.get_external_asset_spec(m, project) for m in project.external_models]
    return [s for s in specs if s.key not in exclude]
