"""One run per partitions definition: how a selection of assets becomes runs Dagster accepts.

A Dagster run targets partitions of one definition, and a SQLMesh project may mix grains
(hourly, daily, monthly, quarter-hourly models). Every place that turns a selection into runs
(the cron schedules, the catch-up sensor, ``pipelines run``, the tests) splits it here, and
names each part's partitions with the keys of that part's own definition.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import dagster as dg
from croniter import croniter

from dagster_sqlmesh_bridge.timeutil import UTC
from dagster_sqlmesh_bridge.translator import partition_keys_in_window


@dataclass(frozen=True)
class RunPart:
    """Assets that can share a run: one partitions definition (or none), in dependency order."""

    partitions_def: dg.PartitionsDefinition | None
    keys: tuple[dg.AssetKey, ...]


def split_by_partitions(graph: dg.AssetGraph | object, keys: Iterable[dg.AssetKey]) -> list[RunPart]:
    """``keys`` grouped by partitions definition, the groups ordered so that a group runs after
    the groups it reads from (when the groups' dependencies form a cycle, by the position of
    each group's first asset in the assets' own topological order).

    Unpartitioned assets share the run of the partitioned ones when there is only one
    partitions definition (as before: a daily run also refreshes the FULL models it feeds);
    with several, they get a run of their own.
    """
    wanted = list(dict.fromkeys(keys))
    defs = {k: graph.get(k).partitions_def for k in wanted}  # type: ignore[attr-defined]
    distinct = list(dict.fromkeys(d for d in defs.values() if d is not None))
    if len(distinct) <= 1:
        return [RunPart(distinct[0] if distinct else None, tuple(wanted))] if wanted else []
    order = _topological(graph, wanted)
    groups: dict[dg.PartitionsDefinition | None, list[dg.AssetKey]] = {}
    for key in order:
        groups.setdefault(defs[key], []).append(key)
    sorter: graphlib.TopologicalSorter[dg.PartitionsDefinition | None] = graphlib.TopologicalSorter()
    for key in order:
        parents = {defs[p] for p in graph.get(key).parent_keys if p in defs}  # type: ignore[attr-defined]
        sorter.add(defs[key], *(p for p in parents if p != defs[key]))
    try:
        ranked = list(sorter.static_order())
    except graphlib.CycleError:
        ranked = list(groups)  # first-asset order
    return [RunPart(d, tuple(groups[d])) for d in ranked if d in groups]


def _topological(graph: object, keys: Sequence[dg.AssetKey]) -> list[dg.AssetKey]:
    sorter: graphlib.TopologicalSorter[dg.AssetKey] = graphlib.TopologicalSorter()
    wanted = set(keys)
    for key in keys:
        sorter.add(key, *(p for p in graph.get(key).parent_keys if p in wanted))  # type: ignore[attr-defined]
    try:
        return list(sorter.static_order())
    except graphlib.CycleError:
        return list(keys)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def keys_closed_between(
    partitions_def: dg.PartitionsDefinition, after: datetime, until: datetime
) -> list[str]:
    """Keys of the time partitions whose window ended in ``(after, until]``, oldest first,
    never before the definition's start (what a tick at ``until`` should compute)."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise TypeError(f"not a time-window partitions definition: {partitions_def!r}")
    cron = partitions_def.get_cron_schedule()
    start = _utc(partitions_def.start)
    ends = croniter(cron, _utc(after))
    keys = []
    while (end := ends.get_next(datetime)) <= _utc(until):
        begin = croniter(cron, end).get_prev(datetime)
        if begin >= start:
            keys.append(begin.strftime(partitions_def.fmt))
    return keys


def keys_within_days(partitions_def: dg.PartitionsDefinition, first: date, last: date) -> list[str]:
    """Keys of the time partitions that lie whole inside the days ``first``..``last`` (an
    operator's day range, in the keys of an hourly, monthly... definition)."""
    begin = datetime.combine(first, time(), UTC)
    return partition_keys_in_window(partitions_def, begin, begin + timedelta(days=(last - first).days + 1))


def contiguous_key_ranges(ordered: Sequence[str], chosen: Iterable[str]) -> list[tuple[str, str]]:
    """``chosen`` keys as ``(first, last)`` runs of keys that are consecutive in ``ordered``."""
    picked = set(chosen)
    ranges: list[tuple[str, str]] = []
    current: list[str] = []
    for key in ordered:
        if key in picked:
            current.append(key)
        elif current:
            ranges.append((current[0], current[-1]))
            current = []
    if current:
        ranges.append((current[0], current[-1]))
    return ranges
