"""Transformation: every SQLMesh model of the configured project as a Dagster asset."""

import dagster as dg

from pipelines.settings import Settings
from pipelines.sqlmesh_bridge import SQLMeshResource, SQLMeshTranslator, load_project, sqlmesh_assets


class PipelinesTranslator(SQLMeshTranslator):
    """Our conventions: models in ``marts`` are owned by analytics unless they say otherwise."""


class PlanConfig(dg.Config):
    """``allow_breaking``: apply breaking model changes too (their history is recomputed)."""

    allow_breaking: bool = False


@dg.op(name="sqlmesh_plan", pool="sqlmesh")
def sqlmesh_plan_op(context: dg.OpExecutionContext, config: PlanConfig, sqlmesh: SQLMeshResource) -> None:
    """Apply the project's model changes to the environment, with the plan in the logs."""
    summary = sqlmesh.apply_plan(context.log, allow_breaking=config.allow_breaking)
    context.log.info(f"plan applied: {summary}")


@dg.job(name="sqlmesh_plan", description="Apply SQLMesh model changes to prod (the only way they get there).")
def sqlmesh_plan_job() -> None:
    sqlmesh_plan_op()


def build_defs(settings: Settings) -> dg.Definitions:
    project = load_project(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)
    return dg.Definitions(assets=[sqlmesh_assets(project, PipelinesTranslator())], jobs=[sqlmesh_plan_job])

