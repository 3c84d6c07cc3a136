"""The configured SQLMesh project, read the one way every caller reads it.

The code location, and the image build that bakes the bridge's cache, must key the cache alike
(project paths, gateway, excluded data folder, environment), or a pod misses the baked cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dagster_sqlmesh_bridge import ProjectInfo, load_project
from pipelines.platform.settings import Settings, SettingsError


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


def load_configured_project(
    settings: Settings | None = None, dirs: Sequence[Path] | None = None
) -> ProjectInfo:
    """The project as the definitions load it (from the bridge's cache when nothing changed)."""
    if settings is None:
        settings, dirs = settings_from_env()
    cache_dir = os.environ.get("PIPELINES_BRIDGE_CACHE_DIR", "").strip() or None
    return load_project(
        list(dirs or [settings.sqlmesh_project_dir]),
        settings.sqlmesh_gateway,
        cache_dir=cache_dir,
        exclude=[settings.data_dir],
        cache_salt=settings.env,
    )
