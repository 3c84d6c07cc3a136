"""A Dagster code location that orchestrates SQLMesh on DuckDB/DuckLake.

``pipelines.SQLMeshProjectComponent`` is the component a Dagster project declares in a
``defs.yaml`` (docs/architecture.md). It is imported on first use, so operator commands and the
data API do not load Dagster's component machinery.
"""

import warnings
from typing import Any

# APIs this project needs that Dagster 1.13 still marks beta: BackfillPolicy (single-run
# partition ranges), code references, and the column schema-change checks.
_BETA_APIS = "|".join(
    (
        "backfill_policy",
        "CodeReferencesMetadataValue",
        "LocalFileCodeReference",
        "build_column_schema_change_checks",
    )
)
warnings.filterwarnings("ignore", message=rf".*({_BETA_APIS}).*currently in beta.*")

__all__ = ["SQLMeshProjectComponent"]


def __getattr__(name: str) -> Any:
    if name == "SQLMeshProjectComponent":
        from pipelines.component.component import SQLMeshProjectComponent

        return SQLMeshProjectComponent
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
