"""A small, self-contained bridge from a SQLMesh project to Dagster assets.

Every model SQLMesh builds is its own asset (EMBEDDED models are not: they have no table);
the tables the models read but SQLMesh does not build are external assets. Incremental-by-time
models get Dagster time partitions of their interval unit (hourly, daily, monthly...), so a
partition range is exactly a range of SQLMesh intervals. Everything comes in by argument: the
bridge reads no environment variable of its own.

- :mod:`.project`  reads a project (one path, or several for a multi-repo project) into plain
  data, cached by what defines the models; loading never opens the warehouse
- :mod:`.translator` maps each model to an ``AssetSpec`` (subclass it to change keys, groups...)
- :mod:`.events` observes SQLMesh's console and notification callbacks (the only module that
  implements SQLMesh's ``Console``)
- :mod:`.resource` runs SQLMesh for a Dagster selection and partition range and streams each
  model's results as SQLMesh finishes it; runs a person launched recompute, runs of schedules,
  sensors and automation compute what is due; ``apply_plan`` deploys model changes. A
  ``ModelHook`` adds metadata and its own checks to each model's materialization, made the
  moment SQLMesh finished the model (the code location's quality checks are one)
- :mod:`.assets` builds the ``multi_asset`` and the external asset specs
- :mod:`.context_setup` what every SQLMesh ``Context`` opens with: SQLMesh's sqlglot
  extensions in effect whatever the process ran first, relative DuckDB files in the project folder

Example (a complete code location for any SQLMesh project)::

    import dagster as dg
    from pipelines.sqlmesh_bridge import (
        SQLMeshResource, SQLMeshTranslator, load_project, sqlmesh_assets, sqlmesh_external_specs,
    )

    project = load_project(["/srv/repo_a", "/srv/repo_b"], gateway="local")
    translator = SQLMeshTranslator()
    defs = dg.Definitions(
        assets=[
            sqlmesh_assets(project, translator, pool=None),
            *sqlmesh_external_specs(project, translator),
        ],
        resources={
            "sqlmesh": SQLMeshResource(
                project_dir="/srv/repo_a", extra_project_dirs=["/srv/repo_b"], gateway="local"
            )
        },
    )
"""

from pipelines.sqlmesh_bridge.assets import sqlmesh_assets, sqlmesh_external_specs
from pipelines.sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo, load_project
from pipelines.sqlmesh_bridge.resource import ModelHook, ModelReport, SQLMeshResource
from pipelines.sqlmesh_bridge.translator import SQLMeshTranslator

__all__ = [
    "AuditInfo",
    "ModelHook",
    "ModelInfo",
    "ModelReport",
    "ProjectInfo",
    "SQLMeshResource",
    "SQLMeshTranslator",
    "load_project",
    "sqlmesh_assets",
    "sqlmesh_external_specs",
]
