"""What the platform does around a deploy (the integration's ``PlanExtension``): the raw-history
check before the plan, and the release record in the lake's audit trail after it."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge.component.transformation import PlanExtension, record_versions
from dagster_sqlmesh_bridge.plan_outcome import PlanOutcome
from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.resource import SQLMeshResource
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator
from pipelines.component.releases import build_release, git_commit, list_releases, write_release
from pipelines.governance.raw_history import RawHistory
from pipelines.platform.lake import Lake


def load_contracts(reference: str) -> Mapping[str, Any]:
    """The mapping ``module:attribute`` names (a project's raw source contracts)."""
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"raw_contracts: {reference!r} must be `module:attribute`")
    value = getattr(importlib.import_module(module), attribute)
    if not isinstance(value, Mapping):
        raise TypeError(f"raw_contracts: {reference} is a {type(value).__name__}, not a mapping")
    return value


def lake_plan_extension(raw_contracts: str | None) -> PlanExtension:
    """The raw-history check (when the project names its raw contracts) and the release record."""

    def history(context: dg.OpExecutionContext) -> RawHistory | None:
        if raw_contracts is None:
            context.log.info(
                "no raw contracts declared for this project: the plan does not check raw history"
            )
            return None
        return RawHistory(context.resources.lake.get(), contracts=load_contracts(raw_contracts))

    def record(
        context: dg.OpExecutionContext,
        sqlmesh: SQLMeshResource,
        outcome: PlanOutcome,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
    ) -> None:
        lake = context.resources.lake.get()
        release = outcome if outcome.changes else unrecorded(outcome.last_applied, lake)
        if release is not None:
            record_release(context, sqlmesh, lake, release, project, translator)

    return PlanExtension(history=history, record=record, resource_keys=frozenset({"lake"}))


def unrecorded(last: PlanOutcome | None, lake: Lake) -> PlanOutcome | None:
    """The environment's last applied plan when no release records it (its first attempt
    failed after the views moved): the retry completes it."""
    if last is None or not last.changes or last.plan_id is None:
        return None
    if any(r.get("plan_id") == last.plan_id for r in list_releases(lake)):
        return None
    return last


def record_release(
    context: dg.OpExecutionContext,
    sqlmesh: SQLMeshResource,
    lake: Lake,
    outcome: PlanOutcome,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
) -> None:
    """Write the release record (markdown first, the JSON last: a record that exists is whole)
    and point each changed model's asset (the translator's key) at it."""
    tags = context.run.tags
    record = build_release(
        outcome,
        run_id=context.run_id,
        applied_by=tags.get("dagster/user") or tags.get("user") or f"job {context.run.job_name}",
        git_commit=git_commit(sqlmesh.project_dir),
    )
    json_key, md_key = write_release(lake, record)
    context.log.info(f"release {record['release_id']} recorded: {lake.url(json_key)}")
    metadata = {
        "sqlmesh/release": dg.MetadataValue.path(lake.url(md_key)),
        "sqlmesh/release_record": dg.MetadataValue.path(lake.url(json_key)),
        "sqlmesh/release_id": record["release_id"],
    }
    record_versions(context, sqlmesh, outcome, project, translator, metadata)
