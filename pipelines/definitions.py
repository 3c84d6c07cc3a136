"""The code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here."""

import dagster as dg

from pipelines.defs import automation, governance, ingestion, quality, reporting, transformation
from pipelines.governance import column_classifications
from pipelines.resources import build_resources
from pipelines.settings import Settings
from pipelines.sqlmesh_bridge import load_project

# Steps of a run share its process: launched from the UI, a mart's partition with its checks used
# to start four processes that each loaded the code location and SQLMesh again (2/3 of the run's
# time, docs/benchmarks.md, "Latency of one click"). A step that raises still fails alone (steps
# that do not depend on it still run); in production each run is its own pod.
EXECUTOR = dg.in_process_executor


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    project = load_project(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)
    translator = transformation.PipelinesTranslator(column_classifications(project))
    return dg.Definitions.merge(
        ingestion.defs,
        transformation.build_defs(settings, project, translator),
        quality.build_defs(project, translator),
        reporting.defs,
        governance.build_defs(project),
        automation.build_defs(project, translator),
        dg.Definitions(resources=build_resources(settings), executor=EXECUTOR),
    )


defs = build_definitions()
