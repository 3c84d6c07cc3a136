"""Transformation: every SQLMesh model of the configured project as a Dagster asset."""

import dagster as dg

from pipelines.settings import Settings
from pipelines.sqlmesh_bridge import SQLMeshTranslator, load_project, sqlmesh_assets


class PipelinesTranslator(SQLMeshTranslator):
    """Our conventions: models in ``marts`` are owned by analytics unless they say otherwise."""


def build_defs(settings: Settings) -> dg.Definitions:
    project = load_project(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)
    return dg.Definitions(assets=[sqlmesh_assets(project, PipelinesTranslator())])
