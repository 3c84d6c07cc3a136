"""A small, self-contained bridge from a SQLMesh project to Dagster assets.

- :mod:`.project`  reads a project once into plain data (cached by file contents)
- :mod:`.translator` maps each model to an ``AssetSpec`` (subclass it to change keys, groups...)
- :mod:`.events` observes SQLMesh's evaluation callbacks to learn what really happened
- :mod:`.resource` runs SQLMesh for a Dagster selection and partition range
- :mod:`.assets` builds the ``multi_asset``

It depends on nothing else in ``pipelines`` so it can be lifted into another project.
"""

from pipelines.sqlmesh_bridge.assets import sqlmesh_assets, sqlmesh_external_specs
from pipelines.sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo, load_project
from pipelines.sqlmesh_bridge.resource import SQLMeshResource
from pipelines.sqlmesh_bridge.translator import SQLMeshTranslator

__all__ = [
    "AuditInfo",
    "ModelInfo",
    "ProjectInfo",
    "SQLMeshResource",
    "SQLMeshTranslator",
    "load_project",
    "sqlmesh_assets",
    "sqlmesh_external_specs",
]
