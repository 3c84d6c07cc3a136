"""The code location's defs folder (Dagster's ``load_from_defs_folder``): one folder per part.

- ``platform/``: maintenance jobs, failure alerts, shared resources, the executor
- ``shop/``: the bundled example (its SQLMesh project as a ``pipelines.SQLMeshProjectComponent``,
  its sources, report and governance); delete the folder to leave it out
"""
