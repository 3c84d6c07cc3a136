"""The raw zone as SQL: one view per source over its Hive-partitioned Parquet files."""

from __future__ import annotations

from pipelines.platform.lake import Lake
from pipelines.platform.settings import Settings
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract


def _glob(lake: Lake, source: str) -> str:
    return lake.url(f"raw/{source}") + "/ds=*/data.parquet"


def _has_data(lake: Lake, source: str) -> bool:
    return any(obj.key.endswith("/data.parquet") for obj in lake.list(f"raw/{source}"))


def view_sql(contract: SourceContract, lake: Lake) -> str:
    cols = ", ".join(f'"{c.name}"' for c in contract.columns)
    if _has_data(lake, contract.name):
        path = _glob(lake, contract.name).replace("'", "''")
        body = (
            f"SELECT {cols}, ds FROM read_parquet('{path}', hive_partitioning = true, "
            "hive_types = {'ds': DATE})"
        )
    else:
        typed = ", ".join(f'CAST(NULL AS {c.type}) AS "{c.name}"' for c in contract.columns)
        body = f"SELECT {typed}, CAST(NULL AS DATE) AS ds WHERE false"
    return f"CREATE OR REPLACE VIEW raw.{contract.name} AS {body}"


def raw_view_statements(
    settings: Settings | None = None, existing: dict[str, str] | None = None
) -> list[str]:
    """The statements that bring the raw views up to date, and only those.

    ``existing`` maps view name -> SQL of the views already there (None: unknown, emit all).
    A view over Parquet never needs replacing (the glob finds new partitions at query time), so
    after the first run nothing is emitted: concurrent runs on DuckLake would otherwise conflict
    replacing the same views.
    """
    settings = settings or Settings.from_env()
    lake = Lake(settings.lake_uri)
    statements = [] if existing else ["CREATE SCHEMA IF NOT EXISTS raw"]
    for contract in CONTRACTS.values():
        current = (existing or {}).get(contract.name)
        if current is not None and "read_parquet" in current:
            continue
        sql = view_sql(contract, lake)
        if current is not None and "read_parquet" not in sql:
            continue  # still no data: the empty view stays
        statements.append(sql)
    return statements
