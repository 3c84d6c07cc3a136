"""Ingestion: one daily-partitioned asset per source table, landing Parquet in the raw zone."""

import dagster as dg

from dagster_sqlmesh_bridge.identifiers import safe_partition_key
from pipelines.platform.partitions import DAILY
from pipelines.platform.resources import LakeResource
from pipelines.shop.resources import DemoDataResource, RatesApiResource, ShopDatabaseResource
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract
from pipelines.shop.sources.ingest import ContractViolation, IngestResult
from pipelines.shop.sources.readers import HttpSourceError, ingest_database, ingest_files, ingest_http

KIND_TAGS = {"database": {"duckdb", "postgres"}, "files": {"duckdb", "s3"}, "http": {"duckdb", "s3"}}
TRANSIENT = dg.RetryPolicy(
    max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def raw_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source])


def column_schema(contract: SourceContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
                tags={"classification": c.classification},
            )
            for c in contract.columns
        ]
    )


def ingest_one(
    contract: SourceContract,
    partition: str,
    lake: LakeResource,
    shop: ShopDatabaseResource,
    rates_api: RatesApiResource,
    demo_data: DemoDataResource,
) -> IngestResult:
    safe_partition_key(partition)  # it becomes paths, SQL literals and URLs below
    the_lake = lake.get()
    demo_data.prepare(contract.name, contract.kind, partition, the_lake, shop)
    if contract.kind == "database":
        return ingest_database(contract, partition, the_lake, shop.attach_options())
    if contract.kind == "files":
        return ingest_files(contract, partition, the_lake)
    return ingest_http(
        contract, partition, the_lake, rates_api.url(), rates_api.timeout_seconds, rates_api.attempts
    )


def build_ingestion_asset(contract: SourceContract) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_asset_key(contract.name),
        group_name="raw",
        description=contract.description,
        partitions_def=DAILY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds=KIND_TAGS[contract.kind] | {"parquet"},
        owners=list(contract.owners),
        tags={"source_kind": contract.kind},
        metadata={"dagster/column_schema": column_schema(contract)},
        retry_policy=TRANSIENT,
        pool="ingestion",
    )
    def _ingest(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        shop: ShopDatabaseResource,
        rates_api: RatesApiResource,
        demo_data: DemoDataResource,
    ) -> dg.MaterializeResult:
        results = []
        for partition in context.partition_keys:
            try:
                result = ingest_one(contract, partition, lake, shop, rates_api, demo_data)
            except (ContractViolation, HttpSourceError) as exc:
                raise dg.Failure(
                    description=f"partition {partition}: {exc}",
                    metadata={"partition": partition, "source": contract.name},
                    allow_retries=isinstance(exc, HttpSourceError),
                ) from exc
            context.log.info(
                f"{contract.name} {partition}: read {result.rows_read}, landed {result.rows_landed}, "
                f"quarantined {result.rows_quarantined}"
            )
            results.append(result)
        landed = sum(r.rows_landed for r in results)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": landed,
                "rows_read": sum(r.rows_read for r in results),
                "rows_landed": landed,
                "rows_quarantined": sum(r.rows_quarantined for r in results),
                "partitions": dg.MetadataValue.json(
                    {
                        r.partition: {
                            "read": r.rows_read,
                            "landed": r.rows_landed,
                            "quarantined": r.rows_quarantined,
                            "raw": r.raw_key,
                            "quarantine": r.quarantine_key,
                            "reasons": r.reasons,
                        }
                        for r in results
                    }
                ),
                "raw_path": dg.MetadataValue.path(lake.get().url(f"raw/{contract.name}")),
            }
        )

    return _ingest


ingestion_assets = [build_ingestion_asset(c) for c in CONTRACTS.values()]
defs = dg.Definitions(assets=ingestion_assets)
