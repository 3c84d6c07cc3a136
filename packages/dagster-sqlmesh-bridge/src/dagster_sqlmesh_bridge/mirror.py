"""Dagster's catalog as a mirror of SQLMesh's state: the partitions Dagster shows materialized
for a model are the intervals SQLMesh holds for the environment's version of it.

SQLMesh's state is the truth. After a plan (new versions, intervals it built), a run that found
its intervals already built, or any drift (a ``sqlmesh plan`` applied outside Dagster), the
intervals SQLMesh holds that Dagster does not show, or shows under another code version, are
recorded as materializations with the version's fingerprint as code version. Dagster cannot
un-materialize a partition (its SQL storages do not wipe single partitions), so partitions Dagster
shows that SQLMesh does not hold are reported, not hidden: the next run of them recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.reporting import keys_of_intervals
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

# Partitions named per model in logs and metadata (the counts are always complete).
_SHOWN = 10
# Partition keys per event-log query.
_CHUNK = 500


@dataclass(frozen=True)
class Held:
    """What SQLMesh's state holds for an environment's version of one model."""

    fingerprint: str
    version: str
    intervals: list[tuple[int, int]]


@dataclass
class MirrorReport:
    """What converging changed: partitions recorded per asset, and those Dagster shows
    materialized that SQLMesh does not hold (drift the mirror cannot undo)."""

    recorded: dict[str, list[str]] = field(default_factory=dict)
    unheld: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"recorded {_few(keys)} of {asset}" for asset, keys in sorted(self.recorded.items())]
        out += [
            f"{asset}: Dagster shows {_few(keys)} that SQLMesh does not hold (a run of them recomputes them)"
            for asset, keys in sorted(self.unheld.items())
        ]
        return out or ["Dagster already mirrors SQLMesh's state"]


def held_intervals(ctx: Any, environment: str, names: set[str] | None = None) -> dict[str, Held]:
    """Per model (fqn) of ``environment``, the fingerprint, version and intervals in SQLMesh's
    state now (read from the state, not from the context's cache)."""
    env = ctx.state_sync.get_environment(environment)
    if env is None:
        return {}
    ids = [s.snapshot_id for s in env.snapshots if not s.is_external and (names is None or s.name in names)]
    snapshots = ctx.state_sync.refresh_snapshot_intervals(list(ctx.state_sync.get_snapshots(ids).values()))
    return {
        s.name: Held(s.fingerprint.to_identifier(), s.version, [(int(a), int(b)) for a, b in s.intervals])
        for s in snapshots
    }


def converge(
    instance: dg.DagsterInstance,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    held: dict[str, Held],
    note: str,
    renewed: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[dg.AssetMaterialization], MirrorReport]:
    """The materializations that make Dagster show what ``held`` says, and what they change.

    ``renewed`` names models whose version the caller just changed (a plan): every interval of
    theirs is recorded again under the new code version. ``note`` says who records them."""
    events: list[dg.AssetMaterialization] = []
    report = MirrorReport()
    for model in project.internal_models:
        state = held.get(model.fqn)
        if state is None:
            continue
        key = translator.get_asset_key(model)
        latest = instance.get_latest_materialization_event(key)
        shown = _code_version(latest)
        tags = {"dagster/code_version": state.fingerprint}
        metadata = {
            "sqlmesh/fingerprint": state.fingerprint,
            "sqlmesh/version": state.version,
            "sqlmesh/note": note,
        }
        pdef = translator.get_partitions_def(model, project)
        if pdef is None:
            if state.intervals and (model.fqn in renewed or shown != state.fingerprint):
                events.append(dg.AssetMaterialization(key, metadata=metadata, tags=tags))
                report.recorded[key.to_user_string()] = ["(unpartitioned)"]
            continue
        keys = keys_of_intervals(pdef, state.intervals)
        everything = pdef.get_partition_keys()
        versions = shown_versions(instance, key, everything) if shown is not None else {}
        materialized = set(versions)
        renew = model.fqn in renewed
        record = [k for k in keys if renew or versions.get(k, "") != state.fingerprint]
        events += [dg.AssetMaterialization(key, partition=k, metadata=metadata, tags=tags) for k in record]
        if record:
            report.recorded[key.to_user_string()] = record
        unheld = sorted(materialized - set(keys))
        if unheld:
            report.unheld[key.to_user_string()] = unheld
    return events, report


def shown_versions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]
) -> dict[str, str | None]:
    """Per partition of ``partitions`` that Dagster shows materialized, the code version of its
    newest materialization (a run in progress does not hide it, unlike the partition status).
    Asked in chunks: a storage bounds how many values one query may name (SQLite: 32,766)."""
    found: dict[str, str | None] = {}
    ordered = sorted(set(partitions))
    for first in range(0, len(ordered), _CHUNK):
        chunk = ordered[first : first + _CHUNK]
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk), limit=1000, cursor=cursor
            )
            for record in page.records:
                if record.partition_key in chunk and record.partition_key not in found:
                    found[record.partition_key] = _code_version(record.event_log_entry)
            if not page.has_more or all(k in found for k in chunk):
                break
            cursor = page.cursor
    return found


def _code_version(event: Any) -> str | None:
    if event is None or event.asset_materialization is None:
        return None
    materialization = event.asset_materialization
    version = (materialization.tags or {}).get("dagster/code_version")
    if version is None:
        value = materialization.metadata.get("sqlmesh/fingerprint")
        version = getattr(value, "value", value)
    return version


def _few(keys: list[str]) -> str:
    if keys == ["(unpartitioned)"]:
        return "the table"
    shown = ", ".join(keys[:_SHOWN]) + (", ..." if len(keys) > _SHOWN else "")
    return f"{len(keys)} partition(s) ({shown})"
