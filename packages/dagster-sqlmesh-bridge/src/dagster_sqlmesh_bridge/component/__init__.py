"""The SQLMesh project as a Dagster Component: ``SQLMeshProjectComponent`` and what it assembles
(the models' assets and plan job, quality checks, automation, release records)."""
