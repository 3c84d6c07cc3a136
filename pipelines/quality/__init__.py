"""Data quality: table profiles computed in SQL, their history, and anomaly checks on top.

``profile`` runs one aggregate query per table (or per set of partitions) inside DuckDB and keeps
the results in a small history database; ``anomaly`` holds the pure decision rules; ``checks``
turns both into Dagster asset checks.
"""

from pipelines.quality.profile import ProfileStore, TableProfile, profile_table, record_profile

__all__ = ["ProfileStore", "TableProfile", "profile_table", "record_profile"]
