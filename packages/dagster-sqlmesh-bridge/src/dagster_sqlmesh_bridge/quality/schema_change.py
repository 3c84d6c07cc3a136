"""The column schema-change check: what the last materialization's columns changed.

Dagster's ``build_column_schema_change_checks`` makes one check step for all assets, which
Dagster skips as soon as any one of them was not materialized in the run; this check is made
in the SQLMesh step with each model's materialization. It compares the ``dagster/column_schema``
the run is about to record with the newest one from an earlier run (a ranged run materializes
every partition with the same schema, so the previous event of the same run would hide a change).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

SCHEMA_CHECK = "column_schema_change"


def _columns(record: Any) -> dict[str, str] | None:
    return _event_columns(record.asset_materialization)


def _event_columns(materialization: Any) -> dict[str, str] | None:
    schema = materialization.metadata.get("dagster/column_schema")
    return columns_of(schema.value if schema is not None else None)


def schema_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": [c for c in new if c not in old],
        "removed": [c for c in old if c not in new],
        "retyped": [f"{c}: {old[c]} -> {new[c]}" for c in new if c in old and old[c] != new[c]],
    }


def schema_change_result(
    instance: dg.DagsterInstance, key: dg.AssetKey, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    """The newest materialization against the newest one from an earlier run (a check run
    alone, after the fact). Passes when nothing changed or there is nothing to compare with."""
    latest = instance.fetch_materializations(key, limit=1).records
    if not latest:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=SCHEMA_CHECK,
            passed=True,
            severity=severity,
            description="not materialized yet",
        )
    new = _columns(latest[0])
    return schema_change_before(instance, key, new, _run_start(instance, latest[0]), severity)


def run_start(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """When a run started (None if it has no start time yet)."""
    record = instance.get_run_record_by_id(run_id)
    return record.start_time if record is not None else None


def _run_start(instance: dg.DagsterInstance, record: Any) -> float:
    return run_start(instance, record.run_id) or record.timestamp


def columns_of(schema: dg.TableSchema | None) -> dict[str, str] | None:
    return None if schema is None else {c.name: c.type for c in schema.columns}


def schema_change_before(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    new: dict[str, str] | None,
    before: float | None,
    severity: dg.AssetCheckSeverity,
) -> dg.AssetCheckResult:
    """``new`` columns against the newest materialization before ``before`` (a timestamp; None:
    the newest of all). Passes when nothing changed or there is nothing to compare with."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, before_timestamp=before)
    earlier = instance.fetch_materializations(records_filter, limit=1).records
    return schema_change_of(key, _columns(earlier[0]) if earlier else None, new, severity)


def latest_schemas(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]
) -> dict[dg.AssetKey, tuple[str, dict[str, str] | None]]:
    """Each asset's newest materialization as (run id, its columns), with one query for all."""
    found = {}
    for record in instance.get_asset_records(list(keys)):
        entry = record.asset_entry
        latest = entry.last_materialization
        if latest is not None and latest.asset_materialization is not None:
            found[entry.asset_key] = (latest.run_id, _event_columns(latest.asset_materialization))
    return found


def schema_change_of(
    key: dg.AssetKey,
    old: dict[str, str] | None,
    new: dict[str, str] | None,
    severity: dg.AssetCheckSeverity,
) -> dg.AssetCheckResult:
    """The check's verdict on two column lists (None: nothing to compare with)."""
    if new is None or old is None:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=SCHEMA_CHECK,
            passed=True,
            severity=severity,  # Dagster's default is ERROR: the UI would show a WARN check as one
            description="no earlier column schema to compare with",
        )
    changes = schema_changes(old, new)
    lines = [
        f"{label}: {', '.join(items)}"
        for label, items in (
            ("Added columns", changes["added"]),
            ("Removed columns", changes["removed"]),
            ("Column type changes", changes["retyped"]),
        )
        if items
    ]
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=SCHEMA_CHECK,
        passed=not lines,
        severity=severity,
        description="\n".join(lines) or "no column added, removed or retyped",
        metadata={name: dg.MetadataValue.json(items) for name, items in changes.items()},
    )
