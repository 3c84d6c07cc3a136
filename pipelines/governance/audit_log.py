"""Audit trail: one immutable JSON record per finished Dagster run, in the lake.

``audit/YYYY/MM/DD/<run_id>.json`` holds a single JSON object on one line (JSON lines, so a log
shipper can tail the prefix): who or what started the run, what it materialized (with SQLMesh
intervals, fingerprints and row counts), the checks' outcomes and the final status. Records are
written only if absent, never overwritten; Dagster's own event log stays the detailed source.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pipelines.platform.lake import Lake
from pipelines.platform.resources import LakeResource

AUDIT_PREFIX = "audit"
SCHEMA_VERSION = 1
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Tags that say who/what started a run; everything else (run config, other tags) stays out.
TRIGGER_TAGS = {
    "dagster/schedule_name": "schedule",
    "dagster/sensor_name": "sensor",
    "dagster/backfill": "backfill",
    "user": "user",
    "dagster/user": "user",
}
RECORDED_TAGS = (
    *TRIGGER_TAGS,
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
    "dagster/from_ui",
    "dagster/parent_run_id",
    "dagster/root_run_id",
    "dagster/is_resume_retry",
)
_SECRETS = (
    (re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)\S+"), r"\1\2***"),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1***@"),
)
MAX_MESSAGE = 2000


def redact(text: str) -> str:
    """Errors quote connection strings now and then: keep the message, drop the secret."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text[:MAX_MESSAGE]


def audit_key(run_id: str, when: datetime) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(f"invalid run id {run_id!r}")
    return f"{AUDIT_PREFIX}/{when.astimezone(UTC):%Y/%m/%d}/{run_id}.json"


def _record_time(record: Mapping[str, Any]) -> datetime:
    stamp = record.get("ended_at") or record.get("recorded_at")
    return datetime.fromisoformat(stamp) if stamp else datetime.now(UTC)


def write_audit_record(lake: Lake, record: Mapping[str, Any]) -> str | None:
    """Write the record if this run has none yet; return its key, or None if it already existed."""
    key = audit_key(str(record["run_id"]), _record_time(record))
    body = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    if lake.is_s3:
        return _put_if_absent_s3(lake, key, body)
    target = lake.root / key
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(body)
    try:
        os.link(tmp, target)  # atomic and fails if the target exists: write-if-absent
    except FileExistsError:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _put_if_absent_s3(lake: Lake, key: str, body: bytes) -> str | None:
    client = lake.client
    full = lake._s3_key(key)
    try:
        client.put_object(Bucket=lake.bucket, Key=full, Body=body, IfNoneMatch="*")
        return key
    except client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return None
        if code not in ("NotImplemented", "InvalidArgument"):
            raise
    # Stores without conditional writes: never overwrite, fall back to a unique key.
    if lake.exists(key):
        return None
    unique = key.removesuffix(".json") + f".{uuid.uuid4().hex}.json"
    client.put_object(Bucket=lake.bucket, Key=lake._s3_key(unique), Body=body)
    return unique


def _plain(value: Any) -> Any:
    """A metadata value as JSON-ready data."""
    inner = getattr(value, "value", value)
    if isinstance(inner, (str, int, float, bool)) or inner is None:
        return inner
    if isinstance(inner, (list, dict)):
        return json.loads(json.dumps(inner, default=str))
    return str(inner)


def _error_text(error: Any, fallback: str | None) -> str:
    """The error and its causes, one line each, no stack traces (they quote local values)."""
    lines = []
    while error is not None and len(lines) < 5:
        lines.append(error.message.strip())
        error = error.cause
    return "\n".join(lines) if lines else (fallback or "")


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat() if timestamp else None


def _trigger(tags: Mapping[str, str]) -> dict[str, Any]:
    trigger: dict[str, Any] = {"kind": "manual"}
    for tag, field in TRIGGER_TAGS.items():
        if tags.get(tag):
            trigger[field] = tags[tag]
    for kind in ("backfill", "schedule", "sensor"):
        if kind in trigger:
            trigger["kind"] = kind
            break
    return trigger


def build_audit_record(
    instance: dg.DagsterInstance, run: dg.DagsterRun, status: str, message: str | None = None
) -> dict[str, Any]:
    """The audit record of a finished run, from the run, its record and its event log."""
    wanted = {
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_OBSERVATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        dg.DagsterEventType.STEP_FAILURE,
    }
    assets: dict[str, dict[str, Any]] = {}
    observations: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for entry in instance.all_logs(run.run_id, of_type=wanted):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            item = assets.setdefault(mat.asset_key.to_user_string(), {"partitions": []})
            if mat.partition:
                item["partitions"].append(mat.partition)
            meta = mat.metadata
            if "dagster/row_count" in meta:  # a partition's own: the run wrote their sum
                count = _plain(meta["dagster/row_count"])
                item["row_count"] = item.get("row_count", 0) + count if mat.partition else count
            if "sqlmesh/intervals" in meta:
                item["sqlmesh_intervals"] = _plain(meta["sqlmesh/intervals"])
            if "sqlmesh/fingerprint" in meta:
                item["sqlmesh_fingerprint"] = _plain(meta["sqlmesh/fingerprint"])
        elif event.event_type == dg.DagsterEventType.ASSET_OBSERVATION:
            obs = event.asset_observation_data.asset_observation
            observations.append(
                {
                    "asset_key": obs.asset_key.to_user_string(),
                    "metadata": {k: _plain(v) for k, v in obs.metadata.items()},
                }
            )
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            checks.append(
                {
                    "asset_key": evaluation.asset_key.to_user_string(),
                    "check_name": evaluation.check_name,
                    "passed": evaluation.passed,
                    "severity": evaluation.severity.value,
                }
            )
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            errors.append({"step": event.step_key, "message": redact(_error_text(error, event.message))})
    run_record = instance.get_run_record_by_id(run.run_id)
    started = run_record.start_time if run_record else None
    ended = (run_record.end_time if run_record else None) or datetime.now(UTC).timestamp()
    tags = {k: v for k, v in run.tags.items() if k in RECORDED_TAGS}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": status,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": round(ended - started, 3) if started else None,
        "trigger": _trigger(run.tags),
        "tags": tags,
        "assets": [{"asset_key": key, **value} for key, value in sorted(assets.items())],
        "observations": observations,
        "checks": sorted(checks, key=lambda c: (c["asset_key"], c["check_name"])),
        "checks_failed": sum(1 for c in checks if not c["passed"]),
        "errors": errors,
        "message": redact(message) if message else None,
    }


def _record_run(context: dg.RunStatusSensorContext, lake: Lake, status: str) -> None:
    run = context.dagster_run
    message = context.dagster_event.message if status != "SUCCESS" else None
    record = build_audit_record(context.instance, run, status, message)
    key = write_audit_record(lake, record)
    if key:
        context.log.info(f"audit record for run {run.run_id} written to {key}")
    else:
        context.log.info(f"audit record for run {run.run_id} already exists")


def _status_sensor(
    status: dg.DagsterRunStatus, default_status: dg.DefaultSensorStatus, monitor_all_code_locations: bool
) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status,
        name=f"audit_trail_{status.value.lower()}",
        description=f"Writes the audit record of every {status.value.lower()} run to audit/ in the lake.",
        default_status=default_status,
        monitor_all_code_locations=monitor_all_code_locations or None,
        minimum_interval_seconds=30,
    )
    def _sensor(context: dg.RunStatusSensorContext, lake: LakeResource) -> None:
        _record_run(context, lake.get(), status.value)

    return _sensor


def audit_sensors(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations: bool = False,
) -> list[dg.SensorDefinition]:
    """One run-status sensor per final status (success, failure, canceled), one code path.

    Dagster's run-status sensors watch a single status each; they share ``_record_run``.
    """
    return [
        _status_sensor(status, default_status, monitor_all_code_locations)
        for status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    ]
