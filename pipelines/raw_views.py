"""The raw zone as SQL: one view per source over its Hive-partitioned Parquet files."""

from __future__ import annotations

from pipelines.lake import Lake
from pipelines.settings import Settings
from pipelines.sources.contracts import CONTRACTS, SourceContract


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


def raw_view_statements(settings: Settings | None = None) -> list[str]:
    settings = settings or Settings.from_env()
    lake = Lake(settings.lake_uri)
    return ["CREATE SCHEMA IF NOT EXISTS raw"] + [view_sql(c, lake) for c in CONTRACTS.values()]
