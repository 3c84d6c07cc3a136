"""The platform's translator: the integration's (translation, freshness, automation) plus each
column's governance classification as a column tag, which the UI, the quality checks' sample
rows and the data API read (docs/governance.md)."""

from __future__ import annotations

import dagster as dg

from dagster_sqlmesh_bridge.component.translation import ProjectTranslator, Translation
from dagster_sqlmesh_bridge.project import ModelInfo
from pipelines.governance import with_classification_tags


class PipelinesTranslator(ProjectTranslator):
    """``classifications``: per model fqn, column → classification (``column_classifications``)."""

    def __init__(
        self, classifications: dict[str, dict[str, str]] | None = None, translation: Translation | None = None
    ) -> None:
        super().__init__(translation)
        self.classifications = classifications or {}

    def get_column_schema(self, model: ModelInfo) -> dg.TableSchema:
        return with_classification_tags(
            super().get_column_schema(model), self.classifications.get(model.fqn, {})
        )
