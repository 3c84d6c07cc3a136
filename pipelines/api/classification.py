"""What the API may serve, decided by the same classification the Dagster UI shows.

Each column of a marts model gets its level from ``governance.yaml`` or, undeclared, from column
lineage back to the sources (``pipelines.governance.classification``), for whatever project is
configured. A column named ``Email`` or ``contact_email`` that is computed from a PII column is
PII here too, whatever its name. Nothing is guessed from names: a table no model of the project
defines (created by hand, or by another tool) has no classification and is not served at all,
and a column its model does not list is treated as PII.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.governance.classification import column_classifications
from pipelines.platform.configured_project import load_configured_project
from pipelines.platform.settings import Settings

SCHEMA = "marts"
# the governance levels as the API names them: ``masked`` columns hold salted hashes; any other
# level (``pii``, or one this module does not know) is never served
_API_LEVEL = {
    "public": "public",
    "internal": "internal",
    "confidential": "confidential",
    "masked": "pii-masked",
}

TableLevels = Mapping[str, Mapping[str, str]]  # table -> column (lower case) -> API level or "pii"


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


def table_levels(table: str, levels: TableLevels) -> Mapping[str, str] | None:
    """The levels of a marts table's columns; None when no model of the project defines the
    table, so nothing classifies it and it must not be served."""
    return levels.get(table.lower())


def classify(column: str, table: Mapping[str, str]) -> str:
    """The column's API level; ``pii`` is never served. A column the table's model does not list
    (lineage unknown) is PII: unknown must never mean harmless."""
    return table.get(column.lower(), "pii")
