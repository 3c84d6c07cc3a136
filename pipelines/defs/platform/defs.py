"""The platform's own definitions, whatever projects are declared: warehouse maintenance, run
failure alerts, the lake resource, and the executor (steps of a run share its process)."""

import dagster as dg

from pipelines.automation import build_failure_alert_sensor
from pipelines.platform import maintenance_jobs
from pipelines.platform.resources import shared_resources
from pipelines.platform.settings import Settings

# Launched from the UI, a mart's partition with its checks used to start four processes that each
# loaded the code location and SQLMesh again (2/3 of the run's time, docs/benchmarks.md, "Latency
# of one click"). A step that raises still fails alone; in production each run is its own pod.
EXECUTOR = dg.in_process_executor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        maintenance_jobs.defs,
        dg.Definitions(
            sensors=[build_failure_alert_sensor()],
            resources=shared_resources(Settings.from_env()),
            executor=EXECUTOR,
        ),
    )
