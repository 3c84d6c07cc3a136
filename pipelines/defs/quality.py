"""Quality checks for whatever SQLMesh project is configured, declared with the models.

Every model gets default checks from its kind (``pipelines.quality.rules``); the project's
``quality.yaml``, beside its models, adjusts them (severity, columns, thresholds, warm-up,
freshness grace). This module names no table: see docs/quality.md.
"""

from __future__ import annotations

import dagster as dg

from pipelines.quality.checks import build_quality_checks
from pipelines.quality.rules import ModelSettings, QualityConfig, load_quality_config, project_rules
from pipelines.sqlmesh_bridge import ModelInfo, ProjectInfo, SQLMeshTranslator

_CONFIGS: dict[int, tuple[ProjectInfo, QualityConfig]] = {}


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


def build_defs(project: ProjectInfo, translator: SQLMeshTranslator) -> dg.Definitions:
    """Profile checks for every profiled model, a schema-change check on every model asset."""
    rules = project_rules(project, translator, project_quality_config(project))
    models = [translator.get_asset_key(m) for m in sorted(project.internal_models, key=lambda m: m.fqn)]
    return dg.Definitions(asset_checks=build_quality_checks(rules, schema_change_assets=models))
