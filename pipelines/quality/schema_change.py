"""The column schema-change check: what the last materialization's columns changed.

Dagster's ``build_column_schema_change_checks`` makes one check step for all assets, which
Dagster skips as soon as any one of them was not materialized in the run; this check lives in
each asset's own quality step. It compares the ``dagster/column_schema`` of the newest
materialization with the newest one from an earlier run (a ranged run materializes every
partition with the same schema, so the previous event of the same run would hide a change).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

SCHEMA_CHECK = "column_schema_change"


def _columns(record: Any) -> dict[str, str] | None:
    schema = record.asset_materialization.metadata.get("dagster/column_schema")
    if schema is None:
        return None
    return {c.name: c.type for c in schema.value.columns}


def schema_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": [c for c in new if c not in old],
        "removed": [c for c in old if c not in new],
        "retyped": [f"{c}: {old[c]} -> {new[c]}" for c in new if c in old and old[c] != new[c]],
    }


def schema_change_result(
    instance: dg.DagsterInstance, key: dg.AssetKey, severity: dg.AssetCheckSeverity
) -> dg.AssetCheckResult:
    """Pass when nothing changed or there is nothing to compare with yet."""
    latest = instance.fetch_materializations(key, limit=1).records
    if not latest:
        return dg.AssetCheckResult(
            asset_key=key, check_name=SCHEMA_CHECK, passed=True, description="not materialized yet"
        )
    run = instance.get_run_record_by_id(latest[0].run_id)
    before = run.start_time if run is not None and run.start_time else latest[0].timestamp
    earlier = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, before_timestamp=before), limit=1
    ).records
    new = _columns(latest[0])
    old = _columns(earlier[0]) if earlier else None
    if new is None or old is None:
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=SCHEMA_CHECK,
            passed=True,
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
