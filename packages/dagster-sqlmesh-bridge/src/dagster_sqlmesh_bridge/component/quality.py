"""Quality checks for whatever SQLMesh project is configured, declared with the models.

Every model gets default checks from its kind (``dagster_sqlmesh_bridge.quality.rules``); the project's
``quality.yaml``, beside its models, adjusts them (severity, columns, thresholds, warm-up,
freshness grace). The checks are made in the SQLMesh step (``dagster_sqlmesh_bridge.quality.step``). This
module names no table: see docs/quality.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Literal

import dagster as dg
import duckdb

from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.quality.checks import Connect
from dagster_sqlmesh_bridge.quality.rules import (
    ModelSettings,
    QualityConfig,
    load_quality_config,
    project_rules,
)
from dagster_sqlmesh_bridge.quality.step import QualityHook
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

_CONFIGS: dict[int, tuple[ProjectInfo, QualityConfig]] = {}


class QualityDefaults(dg.Model):
    """Settings for every model of the project, on top of ``quality.yaml``'s ``defaults``
    (its per-model entries still win); the names and meanings of docs/quality.md."""

    severity: Literal["WARN", "ERROR"] | None = None
    severity_overrides: dict[str, Literal["WARN", "ERROR"]] | None = None
    warmup: int | None = None
    volume_k: float | None = None
    max_null_jump: float | None = None
    drift_z: float | None = None
    history_window: int | None = None
    freshness: bool | None = None
    freshness_grace_hours: float | None = None
    checks: bool | None = None


class QualityModel(dg.Model):
    """What ``quality:`` accepts: ``default_checks: false`` leaves out every default check (the
    SQLMesh audits stay); ``defaults`` tunes them for the whole project."""

    default_checks: bool = True
    defaults: QualityDefaults = QualityDefaults()


def configure_quality(project: ProjectInfo, settings: QualityModel) -> QualityConfig:
    """The project's ``quality.yaml`` with the component's defaults applied, kept for the
    translator and the checks of this loaded project."""
    file_config = load_quality_config(project)
    overrides = settings.defaults.model_dump(exclude_none=True)
    config = QualityConfig(file_config.path, {**file_config.defaults, **overrides}, file_config.models)
    _CONFIGS[id(project)] = (project, config)
    return config


def project_quality_config(project: ProjectInfo) -> QualityConfig:
    """The project's validated ``quality.yaml``, read once per loaded project."""
    cached = _CONFIGS.get(id(project))
    if cached is None or cached[0] is not project:
        cached = (project, load_quality_config(project))
        _CONFIGS[id(project)] = cached
    return cached[1]


def quality_settings(project: ProjectInfo, model: ModelInfo) -> ModelSettings:
    """One model's effective quality settings (the translator reads its freshness grace)."""
    return project_quality_config(project).settings_for(model)


@lru_cache(maxsize=8)
def gateway_connection(project_dir: str, gateway: str | None) -> Any:
    """The SQLMesh connection config of a project's gateway (SQLMesh is imported only here)."""
    from dagster_sqlmesh_bridge.context_setup import project_configs

    (config,) = project_configs([project_dir]).values()  # a relative DuckDB file: from the project
    return config.get_connection(gateway)


def project_warehouse(project: ProjectInfo) -> Connect:
    """Writable connections to the warehouse the project's models are in: through the project's
    own SQLMesh gateway (the connection SQLMesh itself would open, DuckDB or DuckLake), read at
    check time. A deployment with its own way in overrides the component's ``warehouse_for``."""

    @contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection]:
        adapter = gateway_connection(project.project_dir, project.gateway).create_engine_adapter()
        try:
            cursor = adapter.cursor
            if not isinstance(cursor, duckdb.DuckDBPyConnection):
                raise TypeError(f"quality checks need a DuckDB warehouse, got {type(cursor).__name__}")
            yield cursor
        finally:
            adapter.close()

    return connect


def quality_hook(
    project: ProjectInfo, translator: SQLMeshTranslator, connect: Connect | None = None
) -> QualityHook:
    """Profile checks for every profiled model, a schema-change check on every model asset,
    all made in the SQLMesh step (``connect``: the warehouse; default the project's gateway)."""
    rules = project_rules(project, translator, project_quality_config(project))
    models = [translator.get_asset_key(m) for m in sorted(project.internal_models, key=lambda m: m.fqn)]
    return QualityHook(rules, models, connect or project_warehouse(project))
