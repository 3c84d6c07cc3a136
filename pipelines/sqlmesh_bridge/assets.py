"""The ``multi_asset`` with one asset per SQLMesh model."""

from collections.abc import Iterator

import dagster as dg

from pipelines.sqlmesh_bridge.project import ProjectInfo
from pipelines.sqlmesh_bridge.resource import ModelHook, SQLMeshResource
from pipelines.sqlmesh_bridge.translator import SQLMeshTranslator


class SQLMeshRunConfig(dg.Config):
    """``restate``: recompute even if SQLMesh thinks the intervals are done (default: only
    for partitioned runs, where a backfill always means recompute)."""

    restate: bool | None = None


def sqlmesh_assets(
    project: ProjectInfo,
    translator: SQLMeshTranslator | None = None,
    name: str = "sqlmesh_models",
    pool: str | None = "sqlmesh",
    resource_key: str = "sqlmesh",
    model_hook: ModelHook | None = None,
) -> dg.AssetsDefinition:
    """One asset per model; ``model_hook`` adds metadata (a profile...) and its own checks to
    each materialization."""
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
    def _sqlmesh_models(
        context: dg.AssetExecutionContext, config: SQLMeshRunConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
        resource: SQLMeshResource = getattr(context.resources, resource_key)
        yield from resource.run(context, project, translator, restate=config.restate, model_hook=model_hook)

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
