"""A Dagster code location that orchestrates SQLMesh on DuckDB/DuckLake.

``pipelines.SQLMeshProjectComponent`` is the integration's component
(``dagster_sqlmesh_bridge``, its own package) with the platform's additions, declared in a
``defs.yaml`` (docs/architecture.md). It is imported on first use, so operator commands and the
data API do not load Dagster's component machinery.
"""

from typing import Any

__all__ = ["SQLMeshProjectComponent"]


def __getattr__(name: str) -> Any:
    if name == "SQLMeshProjectComponent":
        from pipelines.component.component import SQLMeshProjectComponent

        return SQLMeshProjectComponent
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
