"""How the component's ``translation`` attribute changes each model's asset: key prefix, group,
tags and owners, with templates rendered per model (``{{ model.schema }}``), like dagster-dbt's
``translation``. The templates are kept unrendered at load and rendered with each model in scope.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge.component.quality import quality_settings
from dagster_sqlmesh_bridge.identifiers import safe_identifier
from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.schedules import automation_condition_for, freshness_policy_for
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator


class TranslationModel(dg.Model):
    """What ``translation:`` accepts; an unknown field is Dagster's own resolution error."""

    key_prefix: str | list[str] | None = None
    group_name: str | None = None
    tags: dict[str, str] = {}
    owners: list[str] = []


class Translation:
    """The raw ``translation`` values and the resolution context that renders them per model."""

    def __init__(self, context: dg.ResolutionContext | None, model: TranslationModel | None) -> None:
        self.context = context
        self.model = model or TranslationModel()

    def render(self, value: Any, model: ModelInfo) -> Any:
        if self.context is None:
            return value
        return self.context.with_scope(model=model).resolve_value(value)

    def key_prefix(self) -> list[str]:
        raw = self.model.key_prefix
        parts = [raw] if isinstance(raw, str) else list(raw or [])
        rendered = [self.context.resolve_value(p) if self.context else p for p in parts]
        return [safe_identifier(str(p), "translation key_prefix part") for p in rendered]


def resolve_translation(context: dg.ResolutionContext, model: Any) -> Translation:
    parsed = model if isinstance(model, TranslationModel) else TranslationModel.model_validate(model or {})
    return Translation(context.at_path("translation"), parsed)


class ProjectTranslator(SQLMeshTranslator):
    """The bridge's defaults plus the component's conventions: each model gets its freshness
    policy and automation condition, and the component's ``translation`` (key prefix, group,
    tags, owners) applies on top. Subclass it (and the component's ``translator_for``) to add
    more, e.g. column classifications."""

    def __init__(self, translation: Translation | None = None) -> None:
        self.translation = translation or Translation(None, None)
        self.prefix = self.translation.key_prefix()

    def get_asset_key(self, model: ModelInfo) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, *super().get_asset_key(model).path])

    def get_group_name(self, model: ModelInfo) -> str:
        group = self.translation.model.group_name
        return super().get_group_name(model) if group is None else str(self.translation.render(group, model))

    def get_tags(self, model: ModelInfo) -> dict[str, str]:
        extra = {k: str(self.translation.render(v, model)) for k, v in self.translation.model.tags.items()}
        return {**super().get_tags(model), **extra}

    def get_owners(self, model: ModelInfo) -> list[str]:
        extra = [str(self.translation.render(o, model)) for o in self.translation.model.owners]
        return [*super().get_owners(model), *(o for o in extra if o)]

    def get_automation_condition(self, model: ModelInfo) -> dg.AutomationCondition | None:
        # one condition object per shape: building them costs ~1 ms each on large projects
        cache = self.__dict__.setdefault("_conditions", {})
        key = (model.time_partitioned, model.interval_unit, model.cron)
        if key not in cache:
            cache[key] = automation_condition_for(model, partitioned=None)
        return cache[key]

    def get_asset_spec(self, model: ModelInfo, project: ProjectInfo) -> dg.AssetSpec:
        spec = super().get_asset_spec(model, project)
        settings = quality_settings(project, model)
        policy = freshness_policy_for(model, settings.freshness_grace) if settings.freshness else None
        return spec.replace_attributes(freshness_policy=policy) if policy is not None else spec
