"""The code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here.

By default everything comes from the defs folder (``pipelines/defs/``) through Dagster's own
loader: the platform's jobs, and the bundled shop declared as component instances. A
deployment that sets ``SQLMESH_PROJECT_DIR`` (one path, or several of one multi-repo project
separated by ``:``) gets that project instead of the shop, declared as the same component;
``PIPELINES_SHOP_DEFS=1`` adds the shop's sources, report and governance to it, and
``PIPELINES_SHOP_DEFS=0`` leaves them out of the bundled project too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from pipelines.component.component import component_for_dirs
from pipelines.platform.configured_project import load_configured_project, settings_from_env
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT, Settings, require_production_settings

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
# the bundled shop's raw sources and their retention (its defs.yaml names the same)
SHOP_CONTRACTS = "pipelines.shop.sources.contracts:CONTRACTS"


def shop_enabled(settings: Settings, environ: Mapping[str, str] | None = None) -> bool:
    """The bundled shop's definitions: with the bundled project, or when asked for."""
    environ = os.environ if environ is None else environ
    asked = environ.get("PIPELINES_SHOP_DEFS", "").strip().lower()
    if asked in ("1", "true", "yes"):
        return True
    if asked in ("0", "false", "no"):
        return False
    return settings.bundled_project


def _platform_defs() -> dg.Definitions:
    from pipelines.defs.platform.defs import defs as platform

    return platform()


def _project_defs(settings: Settings, dirs: Sequence[Path], shop: bool) -> dg.Definitions:
    """One SQLMesh project declared in Python as its defs.yaml would declare it."""
    contracts = SHOP_CONTRACTS if settings.bundled_project else None
    component = component_for_dirs(
        dirs, gateway=settings.sqlmesh_gateway, external_assets=not shop, raw_contracts=contracts
    )
    project = load_configured_project(settings, list(dirs))
    parts = [component.build_project_defs(project), _platform_defs()]
    if shop:
        from dagster_sqlmesh_bridge import sqlmesh_external_specs
        from pipelines.shop.component import ShopComponent

        shop_defs = _shop_defs(ShopComponent(project=BUNDLED_SQLMESH_PROJECT))
        ingested = {key for asset in shop_defs.assets or [] for key in getattr(asset, "keys", ())}
        # the tables this project reads that the shop's ingestion does not build stay external
        externals = sqlmesh_external_specs(project, component.translator_for(project), exclude=ingested)
        parts += [shop_defs, dg.Definitions(assets=externals)]
    return dg.Definitions.merge(*parts)


def _shop_defs(component: dg.Component) -> dg.Definitions:
    return component.build_defs(None)  # type: ignore[arg-type]  # it reads nothing from the context


def build_definitions(
    settings: Settings | None = None, project_dirs: Sequence[str | Path] | None = None
) -> dg.Definitions:
    require_production_settings()  # prod: one error naming every missing variable
    if settings is None:
        settings, dirs = settings_from_env()
    else:
        dirs = [Path(p).resolve() for p in project_dirs] if project_dirs else [settings.sqlmesh_project_dir]
    bundled = dirs == [BUNDLED_SQLMESH_PROJECT.resolve()]
    if bundled and shop_enabled(settings) and (REPOSITORY_ROOT / "pyproject.toml").is_file():
        return dg.load_from_defs_folder(project_root=REPOSITORY_ROOT)
    return _project_defs(settings, dirs, shop=shop_enabled(settings))


defs = build_definitions()
