"""The code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here."""

import dagster as dg

from pipelines.defs import automation, governance, ingestion, quality, reporting, transformation
from pipelines.governance import column_classifications
from pipelines.resources import build_resources
from pipelines.settings import Settings
from pipelines.sqlmesh_bridge import load_project


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    project = load_project(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)
    translator = transformation.PipelinesTranslator(column_classifications(project))
    return dg.Definitions.merge(
        ingestion.defs,
        transformation.build_defs(settings, project, translator),
        quality.build_defs(project, translator),
        reporting.build_defs(),
        governance.build_defs(project),
        automation.build_defs(project, translator),
        dg.Definitions(resources=build_resources(settings)),
    )


defs = build_definitions()
