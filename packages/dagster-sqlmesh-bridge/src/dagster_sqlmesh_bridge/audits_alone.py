"""Audits selected without their models: SQLMesh's own audit queries on the environment's
tables, over the run's partition range (the whole table when the run names none)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_sqlmesh_bridge.project import ModelInfo
from dagster_sqlmesh_bridge.reporting import audit_check_result
from dagster_sqlmesh_bridge.timeutil import UTC
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.resource import SQLMeshResource


def audits_alone(
    resource: SQLMeshResource,
    context: dg.AssetExecutionContext,
    translator: SQLMeshTranslator,
    models: list[tuple[ModelInfo, dg.AssetKey]],
    window_of: Callable[[dg.AssetExecutionContext], tuple[datetime, datetime] | None],
) -> list[dg.AssetCheckResult]:
    """The verdicts of the selected audits of ``models`` over the run's window (``window_of``:
    asked only when an audit is selected; a run of other checks may have no partitions); an
    audit that cannot run fails as a WARN that says why."""
    from dagster_sqlmesh_bridge.events import audit_index

    selected = context.selected_asset_check_keys
    wanted = [
        (model, key, index, name)
        for model, key in models
        for index, audit in enumerate(model.audits)
        if dg.AssetCheckKey(key, name := translator.get_check_name(model, audit, index)) in selected
    ]
    if not wanted:
        return []
    window = window_of(context)
    start, end = window if window is not None else (None, datetime.now(UTC))
    ctx = resource.context()
    verdicts: dict[tuple[str, int], Any] = {}
    try:
        env = ctx.state_sync.get_environment(resource.environment)
        found = ctx.state_sync.get_snapshots(env.snapshots) if env is not None else {}
        snapshots = {s.name: s for s in found.values()}
        for fqn in dict.fromkeys(model.fqn for model, *_ in wanted):
            if fqn not in snapshots:
                continue
            snapshot = snapshots[fqn]
            for r in ctx.snapshot_evaluator.audit(
                snapshot=snapshot, snapshots=snapshots, start=start, end=end
            ):
                index = audit_index(snapshot.model, r.audit.name, r.audit_args or {})
                verdicts[(fqn, index)] = (r, snapshot.model.dialect)
    finally:
        resource.close(ctx)
    results = []
    for model, key, index, name in wanted:
        verdict, dialect = verdicts.get((model.fqn, index), (None, None))
        if verdict is None or verdict.skipped:
            why = (
                "SQLMesh skipped this audit"
                if verdict
                else f"{model.name} has no table in '{resource.environment}'"
            )
            results.append(
                dg.AssetCheckResult(
                    asset_key=key,
                    check_name=name,
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=why,
                )
            )
            continue
        count = int(verdict.count or 0)
        sql = verdict.query.sql(dialect) if count and verdict.query is not None else None
        results.append(audit_check_result(key, name, model.audits[index], count, sql))
    return results
