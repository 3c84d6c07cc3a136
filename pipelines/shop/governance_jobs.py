"""Governance jobs, schedules and sensors: retention, SQLMesh janitor, audit trail."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge import ProjectInfo, SQLMeshResource
from pipelines.governance.audit_log import audit_sensors
from pipelines.governance.classification import load_governance
from pipelines.governance.retention import apply_retention
from pipelines.platform.resources import LakeResource
from pipelines.shop.sources.contracts import CONTRACTS


class RetentionConfig(dg.Config):
    """``dry_run``: report what would be deleted without deleting anything."""

    dry_run: bool = False


@dg.op(name="apply_retention", tags={"governance": "retention"})
def retention_op(
    context: dg.OpExecutionContext, config: RetentionConfig, lake: LakeResource
) -> dict[str, Any]:
    """Delete expired raw and quarantine partitions; observe each raw asset that lost some."""
    today = datetime.now(UTC).date()
    report = apply_retention(lake.get(), CONTRACTS, today, dry_run=config.dry_run)
    for source, items in sorted(report.deleted_by_source().items()):
        raw = [d.partition for d in items if d.zone == "raw"]
        quarantine = [d.partition for d in items if d.zone == "quarantine"]
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(["raw", source]),
                description="retention dry run" if config.dry_run else "retention applied",
                metadata={
                    "retention/dry_run": config.dry_run,
                    "retention/raw_partitions_deleted": dg.MetadataValue.json(raw),
                    "retention/quarantine_partitions_deleted": dg.MetadataValue.json(quarantine),
                    "retention/objects_deleted": sum(d.objects for d in items),
                    "retention/retention_days": CONTRACTS[source].retention_days,
                    "retention/quarantine_retention_days": CONTRACTS[source].quarantine_retention_days,
                },
            )
        )
    for skipped in report.skipped:
        context.log.warning(f"retention skipped {skipped.prefix}: {skipped.reason}")
    summary = report.summary()
    context.add_output_metadata(
        {k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in summary.items()}
    )
    context.log.info(
        f"retention: {summary['deleted_partitions']} partition(s) "
        f"{'would be ' if config.dry_run else ''}deleted, {summary['kept_partitions']} kept"
    )
    return summary


@dg.job(
    name="retention", description="Delete raw and quarantine partitions older than their contracts allow."
)
def retention_job() -> None:
    retention_op()


retention_schedule = dg.ScheduleDefinition(
    name="retention_daily",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily retention; start it once the retention periods are agreed.",
)


@dg.op(name="run_sqlmesh_janitor", pool="sqlmesh", tags={"governance": "janitor"})
def janitor_op(context: dg.OpExecutionContext, sqlmesh: SQLMeshResource) -> list[str]:
    """SQLMesh's janitor: drop expired environments and snapshot tables past their TTL.

    Runs skip the janitor (``skip_janitor=True``) so cleanup never races a model run; this job
    does it instead, in the same ``sqlmesh`` pool.
    """
    from dagster_sqlmesh_bridge.events import RecordingConsole

    class CleanupConsole(RecordingConsole):
        def __init__(self) -> None:
            super().__init__()
            self.cleaned: list[str] = []

        def update_cleanup_progress(self, object_name: str) -> None:
            self.cleaned.append(object_name)

    console = CleanupConsole()
    ctx = sqlmesh.context(console)
    try:
        ok = ctx.run_janitor(ignore_ttl=False)
    finally:
        ctx.close()
    if not ok:
        raise dg.Failure(description="the SQLMesh janitor did not complete")
    context.add_output_metadata(
        {"cleaned_objects": len(console.cleaned), "cleaned": dg.MetadataValue.json(console.cleaned[:500])}
    )
    context.log.info(f"janitor removed {len(console.cleaned)} object(s)")
    return console.cleaned


@dg.job(name="sqlmesh_janitor", description="Clean up expired SQLMesh environments and snapshots.")
def sqlmesh_janitor_job() -> None:
    janitor_op()


janitor_schedule = dg.ScheduleDefinition(
    name="sqlmesh_janitor_daily",
    job=sqlmesh_janitor_job,
    cron_schedule="15 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily SQLMesh janitor (runs skip it, so it must run here).",
)


def build_defs(project: ProjectInfo | None = None) -> dg.Definitions:
    """Governance definitions; with a project, a malformed governance.yaml fails the load early."""
    if project is not None:
        load_governance(project)
    return dg.Definitions(
        jobs=[retention_job, sqlmesh_janitor_job],
        schedules=[retention_schedule, janitor_schedule],
        sensors=audit_sensors(),
    )
