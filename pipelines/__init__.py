"""A Dagster code location that orchestrates SQLMesh on DuckDB/DuckLake."""

import warnings

# BackfillPolicy (required for single-run partition ranges) is marked beta in Dagster 1.13.
warnings.filterwarnings(
    "ignore",
    message=r".*(backfill_policy|CodeReferencesMetadataValue|LocalFileCodeReference|build_column_schema_change_checks).*currently in beta.*",
)
