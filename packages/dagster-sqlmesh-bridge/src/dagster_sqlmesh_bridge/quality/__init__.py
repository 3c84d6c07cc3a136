"""Data quality: table profiles computed in SQL, their shared history, and anomaly checks on top.

``profile`` runs one aggregate query per table (or per set of partitions) inside DuckDB;
``history`` keeps the results in a table of the warehouse's own catalog, shared by every run;
``anomaly`` holds the pure decision rules; ``rules`` derives what to check from the SQLMesh
models and the project's ``quality.yaml``; ``checks`` turns all of it into Dagster asset checks.
"""

from dagster_sqlmesh_bridge.quality.history import ProfileStore, record_profile
from dagster_sqlmesh_bridge.quality.profile import TableProfile, profile_table

__all__ = ["ProfileStore", "TableProfile", "profile_table", "record_profile"]
