"""What a caller plugs into runs and deploys: a hook judging each model as SQLMesh finishes it,
and a check that a deploy's rebuild can still read its inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import dagster as dg

from dagster_sqlmesh_bridge.project import ModelInfo


@dataclass
class ModelReport:
    """What a hook adds to one model's materialization: metadata and check results."""

    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[dg.AssetCheckResult] = field(default_factory=list)
    # rows per partition key of the run's range (each partition's ``dagster/row_count``)
    partition_rows: dict[str, int] = field(default_factory=dict)


class ModelHook(Protocol):
    """Work done on each model the moment SQLMesh finished it (a profile, checks of its data),
    so that its results travel with the model's materialization instead of a step of their own.

    ``materialized`` runs (usually in SQLMesh's worker thread) on SQLMesh's own connection
    (``ctx``), before the materialization is stored; ``partitions`` are the run's keys of the
    model's own partitions definition, or None. ``checks_alone`` answers a run that selected the hook's
    checks without their assets: it judges what is already in the warehouse.
    """

    def check_specs(self) -> list[dg.AssetCheckSpec]: ...

    def materialized(
        self,
        ctx: Any,
        model: ModelInfo,
        key: dg.AssetKey,
        partitions: list[str] | None,
        context: dg.AssetExecutionContext,
    ) -> ModelReport: ...

    def checks_alone(
        self, context: dg.AssetExecutionContext, models: list[tuple[ModelInfo, dg.AssetKey]]
    ) -> Iterator[dg.AssetCheckResult]: ...


class HistoryCheck(Protocol):
    """Says which inputs of a deploy's rebuild cannot be read any more (expired, archived), so
    a deploy never rebuilds a model's history from data that is gone.

    ``unavailable`` gets, per external table (``schema.table``) that the rebuilt models read
    (directly or through VIEW and EMBEDDED models), the ``[start, end)`` ranges they are rebuilt
    over; it returns one line per source and reason naming the days (empty: everything is
    there)."""

    def unavailable(self, needs: Mapping[str, Sequence[tuple[datetime, datetime]]]) -> list[str]: ...
