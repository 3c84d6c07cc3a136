"""A deploy is SQLMesh's own plan: new versions' tables, backfill of exactly the intervals
SQLMesh's state says they lack, then the virtual update that moves the environment's views.

The bridge adds what a shared, multi-writer deployment needs around it, never a second build
path: the plan lock (one plan at a time), the breaking-change gate, the run locks of every
model the plan writes (so no run adds a day to an old version meanwhile), and the raw-history
check (no rebuild from inputs that are gone). What to build comes from SQLMesh's state (the
plan's missing intervals), never from ``plan.new_snapshots``: a version built in part by a
failed or killed deploy, a pull-request check or a dev plan is in the state and not "new", and a
retry must finish it, not skip it. When the build fails SQLMesh raises before the views move:
the environment is untouched and the intervals that were built stay built for the retry.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_sqlmesh_bridge.environment import plan_lock
from dagster_sqlmesh_bridge.hooks import HistoryCheck
from dagster_sqlmesh_bridge.locks import model_locks, postgres_state
from dagster_sqlmesh_bridge.mirror import held_intervals
from dagster_sqlmesh_bridge.plan_outcome import PlanOutcome, describe_last_plan, describe_plan, short_name
from dagster_sqlmesh_bridge.reporting import merge
from dagster_sqlmesh_bridge.timeutil import UTC

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.resource import SQLMeshResource

# How often the set of models to lock may grow while waiting for their locks (a restatement
# elsewhere can clear intervals meanwhile) before the deploy gives up.
_LOCK_ROUNDS = 3


class PlanRefused(dg.Failure):
    """Nothing was applied: the plan would rebuild history whose inputs are gone."""


def deploy(
    resource: SQLMeshResource,
    log: Any,
    allow_breaking: bool = False,
    forward_only: bool = False,
    history: HistoryCheck | None = None,
) -> PlanOutcome:
    """Apply the project's changes to ``resource.environment`` with SQLMesh's plan; breaking
    changes only when ``allow_breaking``; ``forward_only`` deploys them forward-only (changed
    models keep their tables and history). Raises ``dg.Failure`` (environment untouched) when
    building fails, ``PlanRefused`` when ``history`` says inputs of the rebuild are gone."""
    from dagster_sqlmesh_bridge.events import RecordingConsole
    from dagster_sqlmesh_bridge.sqlmesh_private import atomic_batches

    console = RecordingConsole()
    with resource.run_lock(log), atomic_batches(log):
        ctx = resource.context(console)
        try:
            with plan_lock(resource, log, ctx.config):
                outcome = _deploy_locked(resource, ctx, console, log, allow_breaking, forward_only, history)
            last = None if outcome.changes else describe_last_plan(ctx, resource.environment)
            return replace(outcome, held=held_intervals(ctx, resource.environment), last_applied=last)
        finally:
            ctx.close()


def _deploy_locked(
    resource: SQLMeshResource,
    ctx: Any,
    console: Any,
    log: Any,
    allow_breaking: bool,
    forward_only: bool,
    history: HistoryCheck | None,
) -> PlanOutcome:
    name = resource.environment
    before = ctx.state_sync.get_environment(name)
    if before is None:  # created empty: Dagster's partitions decide what gets computed
        ctx.plan(name, skip_backfill=True, auto_apply=True, no_prompts=True)
        return describe_plan(ctx, name, None, None, [])
    plan = ctx.plan_builder(name, forward_only=forward_only).build()  # runs the project's tests
    previous = {s.name: s for s in before.snapshots}
    _log_changes(plan, previous, log)
    breaking = _breaking(plan, previous)
    if breaking and not allow_breaking:
        raise dg.Failure(description="breaking changes need allow_breaking=true: " + ", ".join(breaking))
    state = None if resource.lock_file else postgres_state(ctx.config, resource.gateway)
    writes = _writes(plan, previous)
    for _ in range(_LOCK_ROUNDS):
        reads = _read_through(ctx, writes) - writes
        with model_locks(state, sorted(writes), log, reads=reads):
            # under the locks, from the state as it is now: a run that held a lock has finished
            # its day into the old version, and no run adds one until the views have moved
            plan = ctx.plan_builder(name, forward_only=forward_only, skip_tests=True).build()
            wanted = _writes(plan, previous)
            if wanted <= writes:
                return _apply(ctx, plan, before, console, log, history)
        log.info(f"more models to build than locked ({', '.join(sorted(wanted - writes))}): locking again")
        writes |= wanted
    raise dg.Failure(
        description="plan not applied: the models to build kept changing while it waited for them"
    )


def _apply(
    ctx: Any, plan: Any, before: Any, console: Any, log: Any, history: HistoryCheck | None
) -> PlanOutcome:
    """SQLMesh's plan application (physical tables, backfill, then the views); what it builds is
    logged first and returned as the outcome's recomputed spans."""
    missing = {si.snapshot_id.name: si.merged_intervals for si in plan.missing_intervals}
    if history is not None:
        # days some model of the environment holds had their inputs once: rebuilding them must
        # find those inputs again; days none holds were never computed, so nothing is lost
        held = merge([i for h in held_intervals(ctx, before.name).values() for i in h.intervals])
        _refuse_gone_history(ctx, history, {n: overlap(ivs, held) for n, ivs in missing.items()})
    spans = [(start, end, model) for model, merged in sorted(missing.items()) for start, end in merged]
    for model, merged in sorted(missing.items()):
        ranges = ", ".join(f"[{_iso(s)}, {_iso(e)})" for s, e in merged)
        log.info(f"building {short_name(model)} over {ranges}")
    environment = plan.environment.name
    try:
        ctx.apply(plan)
    except Exception as exc:
        said = [f"{short_name(n)}: {e}" for n, e in sorted(console.record.errors.items())]
        raise dg.Failure(
            description=(
                f"plan not applied: building the new model versions failed, so environment "
                f"'{environment}' stays on its previous versions, untouched. What was built is "
                f"kept in SQLMesh's state; a retry builds only the rest. "
                + ("; ".join(said) or f"{type(exc).__name__}: {exc}")
            ),
            metadata={"failed_models": sorted(short_name(n) for n in console.record.errors)},
        ) from exc
    return describe_plan(ctx, environment, before, plan, spans)


def _log_changes(plan: Any, previous: dict[str, Any], log: Any) -> None:
    for snapshot in sorted(plan.snapshots.values(), key=lambda s: s.name):
        if snapshot.is_external:
            continue
        prior = previous.get(snapshot.name)
        if prior is not None and prior.fingerprint == snapshot.fingerprint:
            continue
        category = snapshot.change_category.name if snapshot.change_category and prior else "NEW"
        log.info(f"{category}{' (forward-only)' if snapshot.is_forward_only else ''}: {snapshot.name}")
        if plan.context_diff.directly_modified(snapshot.name):
            log.info(plan.context_diff.text_diff(snapshot.name))


def _breaking(plan: Any, previous: dict[str, Any]) -> list[str]:
    """Deployed models whose target version is a breaking change: a new table whose history is
    rebuilt. A brand-new model breaks nothing; a forward-only change rewrites no history."""
    from sqlmesh.core.snapshot import SnapshotChangeCategory

    return sorted(
        s.name
        for s in plan.snapshots.values()
        if not s.is_external
        and s.name in previous
        and s.version != previous[s.name].version
        and s.change_category == SnapshotChangeCategory.BREAKING
        and not s.is_forward_only
    )


def _writes(plan: Any, previous: dict[str, Any]) -> set[str]:
    """The models the plan writes: those with intervals to build, and those whose target
    version is a table the environment does not use yet."""
    new_tables = {
        s.name
        for s in plan.snapshots.values()
        if not s.is_external and (s.name not in previous or s.version != previous[s.name].version)
    }
    return new_tables | {si.snapshot_id.name for si in plan.missing_intervals}


def _read_through(ctx: Any, names: set[str]) -> set[str]:
    """What the models read, directly or through VIEW and EMBEDDED models (views included)."""
    out: set[str] = set()
    stack = [d for n in names if (m := ctx.get_model(n)) is not None for d in m.depends_on]
    while stack:
        parent = stack.pop()
        if parent in out:
            continue
        out.add(parent)
        model = ctx.get_model(parent)
        if model is not None and (model.kind.is_view or model.kind.is_embedded):
            stack.extend(model.depends_on)
    return out


def _refuse_gone_history(ctx: Any, history: HistoryCheck, missing: dict[str, list[tuple[int, int]]]) -> None:
    """Raise ``PlanRefused`` naming the sources and days ``history`` says cannot be read again,
    among the external inputs (also behind VIEW and EMBEDDED models) of the time-partitioned
    models the plan builds, added models included (a FULL or VIEW model reads its inputs'
    current state, not their history)."""
    needs: dict[str, list[tuple[datetime, datetime]]] = {}
    for name, intervals in sorted(missing.items()):
        model = ctx.get_model(name)
        if not intervals or model is None or not model.kind.is_incremental_by_time_range:
            continue
        for parent in sorted(_read_through(ctx, {name})):
            upstream = ctx.get_model(parent)
            if upstream is None or upstream.kind.is_external:
                needs.setdefault(short_name(parent), []).extend((_dt(s), _dt(e)) for s, e in intervals)
    gone = history.unavailable(needs) if needs else []
    if gone:
        raise PlanRefused(
            description=(
                "plan not applied: the new model versions would be rebuilt from inputs that cannot "
                "be read any more:\n- " + "\n- ".join(gone) + "\nRebuilding would leave those days "
                "empty. Deploy the change forward-only instead (sqlmesh_plan config `forward_only: "
                "true`): changed models keep their tables and history, and the new logic applies to "
                "the days computed from then on."
            ),
            metadata={"unavailable": gone},
        )


def overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the (merged) intervals ``a`` that lie inside the (merged) intervals ``b``."""
    return [(max(s, t), min(e, u)) for s, e in a for t, u in b if max(s, t) < min(e, u)]


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _iso(ms: int) -> str:
    return _dt(ms).strftime("%Y-%m-%d %H:%M")
