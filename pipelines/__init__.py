"""A Dagster code location that orchestrates SQLMesh on DuckDB/DuckLake."""

import warnings

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
