"""What the API may serve, decided by the same classification the Dagster UI shows.

Each column of a marts model gets its level from ``governance.yaml`` or, undeclared, from column
lineage back to the sources (``pipelines.governance.classification``), for whatever project is
configured. A column named ``Email`` or ``contact_email`` that is computed from a PII column is
PII here too, whatever its name. Tables the project does not know (created by hand) fall back to
the source contracts' names, the strictest level any contract gives the name.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.governance.classification import column_classifications
from pipelines.platform.configured_project import load_configured_project
from pipelines.platform.settings import Settings
from pipelines.shop.sources.contracts import CONTRACTS

SCHEMA = "marts"
_STRICTNESS = {"public": 0, "internal": 1, "confidential": 2, "pii": 3}
# the governance levels as the API names them: ``masked`` columns hold salted hashes
_API_LEVEL = {
    "public": "public",
    "internal": "internal",
    "confidential": "confidential",
    "masked": "pii-masked",
}

TableLevels = Mapping[str, Mapping[str, str]]  # table -> column (lower case) -> API level or "pii"


def _source_classifications() -> dict[str, str]:
    """Column name -> strictest classification any source contract gives that name."""
    classes: dict[str, str] = {}
    for contract in CONTRACTS.values():
        for column in contract.columns:
            current = classes.get(column.name)
            if current is None or _STRICTNESS[column.classification] > _STRICTNESS[current]:
                classes[column.name] = column.classification
    return classes


SOURCE_CLASSIFICATIONS = _source_classifications()


def classify_by_name(column: str) -> str:
    """For a table no model defines: ``pii-masked`` for salted hashes, else what the source
    contracts say of the name, else ``internal``."""
    if column.endswith("_hash"):
        return "pii-masked"
    return SOURCE_CLASSIFICATIONS.get(column, "internal")


def marts_levels(settings: Settings) -> dict[str, dict[str, str]]:
    """``{table: {column: level}}`` for every marts model of the configured project."""
    project = load_configured_project(settings)
    levels = column_classifications(project)
    found: dict[str, dict[str, str]] = {}
    for fqn, model in project.models.items():
        if model.external or model.schema.lower() != SCHEMA:
            continue
        found[model.table.lower()] = {
            column.lower(): _API_LEVEL.get(level, "pii") for column, level in levels.get(fqn, {}).items()
        }
    return found


def classify(table: str, column: str, levels: TableLevels | None) -> str:
    """The column's API level; ``pii`` is never served. A column the project's model does not
    list (lineage unknown) is PII: unknown must never mean harmless."""
    model = levels.get(table.lower()) if levels is not None else None
    if model is None:
        return classify_by_name(column)
    return model.get(column.lower(), "pii")
