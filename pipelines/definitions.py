"""The code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here."""

import dagster as dg

from pipelines.defs import ingestion, transformation
from pipelines.resources import build_resources
from pipelines.settings import Settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    return dg.Definitions.merge(
        ingestion.defs,
        transformation.build_defs(settings),
        dg.Definitions(resources=build_resources(settings)),
    )


defs = build_definitions()
