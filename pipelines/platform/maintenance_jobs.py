"""Warehouse maintenance jobs: bounded storage (snapshot expiry, file cleanup) and a lost-file check.

Both start stopped, like every schedule of the project (docs/automation.md): switch them on in
the UI. They act on the DuckLake warehouse of prod; on the local DuckDB file there is nothing to
expire and no object store to compare, so they log that and succeed.
"""

from typing import Any

import dagster as dg

from pipelines.platform import maintenance
from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import Settings


class MaintenanceConfig(dg.Config):
    """``retention_days``: overrides ``PIPELINES_SNAPSHOT_RETENTION_DAYS`` (default 7) for one run."""

    retention_days: float | None = None


@dg.op(name="expire_warehouse_snapshots", tags={"maintenance": "warehouse"})
def expire_op(context: dg.OpExecutionContext, config: MaintenanceConfig) -> dict[str, Any]:
    """Expire DuckLake snapshots older than the retention and delete the files only they used."""
    from datetime import timedelta

    from pipelines.platform import warehouse

    settings = Settings.from_env()
    if settings.env != "prod":
        context.log.info("local DuckDB warehouse: no DuckLake snapshots to expire")
        return {}
    retention = (
        maintenance.retention_from_env()
        if config.retention_days is None
        else timedelta(days=config.retention_days)
    )
    with warehouse.warehouse(settings, read_only=False) as con:
        report = maintenance.expire_and_clean(con, retention)
    context.add_output_metadata({**report.metadata(), "retention_days": retention.total_seconds() / 86400})
    context.log.info(f"warehouse maintenance: {report.metadata()}")
    return report.metadata()


@dg.job(
    name="warehouse_maintenance",
    description="Expire old DuckLake snapshots (PIPELINES_SNAPSHOT_RETENTION_DAYS), delete unused files.",
)
def maintenance_job() -> None:
    expire_op()


maintenance_schedule = dg.ScheduleDefinition(
    name="warehouse_maintenance_daily",
    job=maintenance_job,
    cron_schedule="45 4 * * *",  # after the SQLMesh janitor (04:15), which drops expired tables
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily DuckLake snapshot expiry and file cleanup (keeps S3 bounded).",
)


@dg.op(name="check_warehouse_files", tags={"maintenance": "warehouse"})
def check_files_op(context: dg.OpExecutionContext, lake: LakeResource) -> int:
    """Fail, naming each model, table and day, when a file the catalog references is gone."""
    from pipelines.platform import warehouse

    settings = Settings.from_env()
    if settings.env != "prod":
        context.log.info("local DuckDB warehouse: no object store to compare with")
        return 0
    from pipelines.platform.configured_project import load_configured_project
    from pipelines.platform.repair import time_columns

    columns = time_columns(load_configured_project())
    with warehouse.warehouse(settings) as con:
        lost = maintenance.missing_files(con, lake.get(), columns)
        outside = maintenance.unplaceable_files(con, lake.get())
    if outside:  # neither present nor missing: the lake's listing cannot see them
        context.log.warning(f"{len(outside)} file(s) outside the lake root, unchecked: {sorted(outside)[:9]}")
    rows = [
        {
            "model": maintenance.model_of_table(f.table),
            "table": f.table,
            "days": list(f.days),
            "path": f.path,
        }
        for f in lost
    ]

    def days(row: dict[str, Any]) -> str:
        if row["days"]:
            return "days " + ", ".join(row["days"])
        return "whole table" if row["model"] in columns and columns[row["model"]] is None else "days unknown"

    context.add_output_metadata(
        {
            "missing_files": len(rows),
            "missing": dg.MetadataValue.json(rows[:200]),
            "unplaceable_files": len(outside),
        }
    )
    if rows:
        named = "; ".join(f"{r['model'] or r['table']} {days(r)}" for r in rows[:20])
        raise dg.Failure(
            description=f"{len(rows)} data file(s) referenced by the DuckLake catalog are missing "
            f"from the lake: {named}. Repair: uv run pipelines repair-files (docs/production.md)",
            metadata={"missing": dg.MetadataValue.json(rows[:200])},
        )
    return 0


@dg.job(name="warehouse_file_check", description="Compare DuckLake's data files with the object store.")
def file_check_job() -> None:
    check_files_op()


file_check_schedule = dg.ScheduleDefinition(
    name="warehouse_file_check_daily",
    job=file_check_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily check that every file the warehouse catalog references exists.",
)

defs = dg.Definitions(
    jobs=[maintenance_job, file_check_job], schedules=[maintenance_schedule, file_check_schedule]
)
