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

from pipelines.defs import maintenance, transformation
from pipelines.resources import build_resources
from pipelines.settings import BUNDLED_SQLMESH_PROJECT, Settings, SettingsError, require_production_settings
from pipelines.sqlmesh_bridge import SQLMeshResource, load_project, sqlmesh_external_specs

# Steps of a run share its process: launched from the UI, a mart's partition with its checks used
# to start four processes that each loaded the code location and SQLMesh again (2/3 of the run's
# time, docs/benchmarks.md, "Latency of one click"). A step that raises still fails alone (steps
# that do not depend on it still run); in production each run is its own pod.
EXECUTOR = dg.in_process_executor


def project_dirs_from_env(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The paths in ``SQLMESH_PROJECT_DIR`` (one, or several separated by ``os.pathsep``)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("SQLMESH_PROJECT_DIR", "").strip()
    dirs = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    for path in dirs:
        if not (path / "config.yaml").exists() and not (path / "config.py").exists():
            raise SettingsError(
                f"SQLMESH_PROJECT_DIR: {path} is not a SQLMesh project (no config.yaml or config.py)"
            )
    return dirs


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[Settings, list[Path]]:
    """The settings, with the first project path as ``sqlmesh_project_dir``, and every path."""
    environ = dict(os.environ if environ is None else environ)
    dirs = project_dirs_from_env(environ)
    if len(dirs) > 1:
        environ["SQLMESH_PROJECT_DIR"] = str(dirs[0])
    settings = Settings.from_env(environ)
    return settings, dirs or [settings.sqlmesh_project_dir]


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
    cache_dir = os.environ.get("PIPELINES_BRIDGE_CACHE_DIR", "").strip() or None
    project = load_project(
        dirs,
        settings.sqlmesh_gateway,
        cache_dir=cache_dir,
        exclude=[settings.data_dir],
        cache_salt=settings.env,
    )
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
        translator = transformation.PipelinesTranslator()
        return dg.Definitions.merge(
            transformation.build_defs(settings, project, translator),
            maintenance.defs,
            dg.Definitions(
                assets=sqlmesh_external_specs(project, translator), resources=resources, executor=EXECUTOR
            ),
        )
    # the bundled shop: imported only when used
    from pipelines.defs import automation, governance, ingestion, quality, reporting
    from pipelines.governance import column_classifications

    translator = transformation.PipelinesTranslator(column_classifications(project))
    ingested = {
        key for ad in ingestion.defs.assets or [] if isinstance(ad, dg.AssetsDefinition) for key in ad.keys
    }
    return dg.Definitions.merge(
        ingestion.defs,
        transformation.build_defs(settings, project, translator),
        dg.Definitions(assets=sqlmesh_external_specs(project, translator, exclude=ingested)),
        quality.build_defs(project, translator),
        reporting.defs,
        maintenance.defs,
        governance.build_defs(project),
        automation.build_defs(project, translator),
        dg.Definitions(resources=resources, executor=EXECUTOR),
    )


defs = build_definitions()
