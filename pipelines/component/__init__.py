"""The platform's SQLMesh component: the integration's (``dagster_sqlmesh_bridge``) with this
deployment's settings, governance, raw-history check, release records and lake."""
