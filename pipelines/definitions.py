"""The code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here.

Any SQLMesh project gets its own models (and the tables they read, as external assets); the
bundled shop's ingestion, report, quality rules, governance and automation join only when the
bundled project is the one configured, or when ``PIPELINES_SHOP_DEFS=1`` asks for them
(``PIPELINES_SHOP_DEFS=0`` leaves them out). ``SQLMESH_PROJECT_DIR`` may name several project
paths of one multi-repo project, separated by ``:`` (``os.pathsep``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from pipelines.configured_project import load_configured_project, settings_from_env
from pipelines.defs import automation, maintenance, quality, transformation
from pipelines.resources import build_resources
from pipelines.settings import BUNDLED_SQLMESH_PROJECT, Settings, require_production_settings
from pipelines.sqlmesh_bridge import SQLMeshResource, sqlmesh_external_specs

# Steps of a run share its process: launched from the UI, a mart's partition with its checks used
# to start four processes that each loaded the code location and SQLMesh again (2/3 of the run's
# time, docs/benchmarks.md, "Latency of one click"). A step that raises still fails alone (steps
# that do not depend on it still run); in production each run is its own pod.
EXECUTOR = dg.in_process_executor


def shop_enabled(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """The bundled shop's definitions: with the bundled project, or when asked for."""
    environ = os.environ if environ is None else environ
    asked = environ.get("PIPELINES_SHOP_DEFS", "").strip().lower()
    if asked in ("1", "true", "yes"):
        return True
    if asked in ("0", "false", "no"):
        return False
    return settings.sqlmesh_project_dir == BUNDLED_SQLMESH_PROJECT.resolve()


def build_definitions(
    settings: Settings | None = None, project_dirs: Sequence[str | Path] | None = None
) -> dg.Definitions:
    require_production_settings()  # prod: one error naming every missing variable
    if settings is None:
        settings, dirs = settings_from_env()
    else:
        dirs = [Path(p).resolve() for p in project_dirs] if project_dirs else [settings.sqlmesh_project_dir]
    project = load_configured_project(settings, dirs)
    resources = build_resources(settings)
    if len(dirs) > 1:
        base: SQLMeshResource = resources["sqlmesh"]  # type: ignore[assignment]
        resources["sqlmesh"] = SQLMeshResource(
            project_dir=str(dirs[0]),
            extra_project_dirs=[str(d) for d in dirs[1:]],
            gateway=base.gateway,
            environment=base.environment,
            lock_file=base.lock_file,
        )
    if not shop_enabled(settings):
        # any project: its models, quality checks and automation; none of the shop's sources
        translator = transformation.PipelinesTranslator()
        return dg.Definitions.merge(
            transformation.build_defs(
                settings, project, translator, quality.quality_hook(project, translator)
            ),
            automation.build_defs(project, translator, landing=False),
            maintenance.defs,
            dg.Definitions(
                assets=sqlmesh_external_specs(project, translator), resources=resources, executor=EXECUTOR
            ),
        )
    # the bundled shop: imported only when used
    from pipelines.defs import governance, ingestion, reporting
    from pipelines.governance import column_classifications

    translator = transformation.PipelinesTranslator(column_classifications(project))
    ingested = {
        key for ad in ingestion.defs.assets or [] if isinstance(ad, dg.AssetsDefinition) for key in ad.keys
    }
    return dg.Definitions.merge(
        ingestion.defs,
        transformation.build_defs(settings, project, translator, quality.quality_hook(project, translator)),
        dg.Definitions(assets=sqlmesh_external_specs(project, translator, exclude=ingested)),
        reporting.build_defs(),
        maintenance.defs,
        governance.build_defs(project),
        automation.build_defs(project, translator),
        dg.Definitions(resources=resources, executor=EXECUTOR),
    )


defs = build_definitions()
