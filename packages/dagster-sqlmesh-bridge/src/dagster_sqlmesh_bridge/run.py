"""One run: the Dagster selection and partition window as one ``Context.run`` of SQLMesh, under
the models' locks, each model's results streamed the moment SQLMesh finished it.

A run that restates (the caller's choice: a person's backfill means "recompute") follows
SQLMesh's restatement: the selected models and every model downstream of them lose the window's
intervals and are computed again in the same run, so nothing downstream keeps data computed from
what was replaced. Intervals of the window that SQLMesh already held (a plan built them) are
recorded as such, so Dagster shows what SQLMesh holds and catch-up converges.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_sqlmesh_bridge.audits_alone import audits_alone
from dagster_sqlmesh_bridge.environment import ensure_environment
from dagster_sqlmesh_bridge.hooks import ModelHook
from dagster_sqlmesh_bridge.locks import model_locks, postgres_state
from dagster_sqlmesh_bridge.mirror import held_intervals, shown_versions
from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.reporting import (
    Event,
    Reporter,
    keys_of_intervals,
    nothing_computed,
    raise_on_failure,
)
from dagster_sqlmesh_bridge.restatement import remove_intervals
from dagster_sqlmesh_bridge.runner import SQLMeshThread
from dagster_sqlmesh_bridge.timeutil import UTC
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.events import AuditCollector, RecordingConsole
    from dagster_sqlmesh_bridge.resource import SQLMeshResource


def run_models(
    resource: SQLMeshResource,
    context: dg.AssetExecutionContext,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    restate: bool,
    model_hook: ModelHook | None = None,
    downstream: bool = True,
) -> Iterator[Event]:
    """Run the selected models over the run's window; restate them (and, with ``downstream``,
    the models downstream of them) first when ``restate``. Failures are raised after every
    success was reported."""
    from dagster_sqlmesh_bridge.events import AuditCollector, RecordingConsole
    from dagster_sqlmesh_bridge.sqlmesh_private import atomic_batches

    by_key = {translator.get_asset_key(m): m.fqn for m in project.internal_models}
    selected = project.topological({by_key[k] for k in context.selected_asset_keys if k in by_key})
    if not selected:  # only checks were selected: judge what the warehouse holds, run nothing
        checked = {k.asset_key for k in context.selected_asset_check_keys}
        alone = [(project.models[by_key[k]], k) for k in sorted(checked, key=str) if k in by_key]
        if alone:
            yield from audits_alone(resource, context, translator, alone, partition_window)
        if model_hook is not None and alone:
            yield from model_hook.checks_alone(context, alone)
        return
    window = partition_window(context)
    console = RecordingConsole()
    collector = AuditCollector.new()
    # one DuckDB transaction per evaluated batch: a restated interval's DELETE and INSERT
    # commit together (sqlmesh_private.atomic_batches)
    with resource.run_lock(context.log), atomic_batches(context.log):
        yield from _run_locked(
            resource,
            context,
            project,
            translator,
            selected,
            window,
            restate,
            model_hook,
            console,
            collector,
            downstream,
        )


def _run_locked(
    resource: SQLMeshResource,
    context: dg.AssetExecutionContext,
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    selected: list[ModelInfo],
    window: tuple[datetime, datetime] | None,
    restate: bool,
    model_hook: ModelHook | None,
    console: RecordingConsole,
    collector: AuditCollector,
    downstream: bool,
) -> Iterator[Event]:
    timer = StageTimer(context.log)
    names = [m.fqn for m in selected]
    restated = [m.fqn for m in selected if m.restatable] if restate else []
    # SQLMesh's restatement: what was computed from the replaced data is replaced too
    below = project.downstream(restated) if downstream else set()
    cascade = sorted(f for f in below - set(names) if project.models[f].restatable)
    writes = [*names, *cascade]
    with timer("load SQLMesh context"):
        ctx = resource.context(console, collector)
    reported: set[str] = set()
    locks = ExitStack()  # per-model locks (locks.py): from restatement to the end of the run
    runner: SQLMeshThread | None = None
    status: Any = None
    try:
        with timer("check environment"):
            ensure_environment(resource, ctx, context.log, project)
        kwargs: dict[str, Any] = {}
        if window is not None:
            # an exclusive datetime end: SQLMesh computes exactly the intervals inside it
            kwargs = {"start": window[0], "end": window[1], "execution_time": window[1]}
        state = None if resource.lock_file else postgres_state(ctx.config, resource.gateway)
        with timer("wait for model locks"):
            internal = {m.fqn for m in project.internal_models}
            reads = (project.read_through(writes) & internal) - set(writes)
            locks.enter_context(model_locks(state, writes, context.log, reads=reads))
        if restated:
            if cascade:
                context.log.info(f"restating downstream too, as SQLMesh does: {', '.join(cascade)}")
            with timer("restate intervals"):
                remove_intervals(ctx, resource.environment, [*restated, *cascade], window, context.log)
        reporter = Reporter(context, project, translator, ctx, collector, window, model_hook)
        console.on_finished = lambda fqn: reporter.prepare(fqn, console.record)
        with timer(f"sqlmesh run of {len(writes)} model(s) {kwargs or ''}"):
            runner = SQLMeshThread(ctx, resource.environment, writes, kwargs)
            runner.start()
            # report each model as SQLMesh finishes it, while the rest still run
            while True:
                try:
                    fqn = console.finished.get(timeout=0.2)
                except queue.Empty:
                    if not runner.is_alive():
                        break
                    continue
                model = project.models.get(fqn)
                if model is None or fqn in reported or fqn not in writes:
                    continue
                reported.add(fqn)
                yield from reporter.model_results(model, console.record)
            runner.join()
        if runner.error is not None:
            raise runner.error
        status = runner.status
        context.log.info(f"sqlmesh run status: {getattr(status, 'name', status)}")
        record = console.record
        # models that never announced completion: failed midway, skipped or not due
        for fqn in writes:
            if fqn not in reported:
                yield from reporter.model_results(project.models[fqn], record)
        recorded = yield from _already_built(context, ctx, resource, reporter, selected, window, record)
        computed = [n for n in writes if (o := record.outcomes.get(n)) and o.batches_done]
        if not computed and not recorded and not record.errors and getattr(status, "name", "") != "FAILURE":
            yield from nothing_computed(context, selected, translator, window)
    finally:
        if runner is not None:
            runner.halt(console, context.log)  # an interrupted step: SQLMesh stops before the locks go
        # the console stays SQLMesh's global console: drop its link to this run's context
        console.on_finished = None
        locks.close()
        resource.close(ctx)
        collector.close()
    raise_on_failure(context, [*selected, *(project.models[f] for f in cascade)], console.record, status)


def _already_built(
    context: dg.AssetExecutionContext,
    ctx: Any,
    resource: SQLMeshResource,
    reporter: Reporter,
    selected: list[ModelInfo],
    window: tuple[datetime, datetime] | None,
    record: Any,
) -> Iterator[Event]:
    """Record the selected intervals SQLMesh held without this run computing them and Dagster
    does not show yet; returns how many were recorded."""
    quiet = [
        m
        for m in selected
        if m.fqn not in record.errors
        and m.fqn not in record.skipped
        and not ((o := record.outcomes.get(m.fqn)) is not None and o.failed)
        and not _computed_whole(reporter, m, record, window)
    ]
    if not quiet:  # the usual run: everything computed, no second read of SQLMesh's state
        return 0
    held = held_intervals(ctx, resource.environment, {m.fqn for m in quiet})
    count = 0
    for model in quiet:
        state = held.get(model.fqn)
        if state is None or not state.intervals:
            continue
        outcome = record.outcomes.get(model.fqn)
        computed = list(outcome.intervals) if outcome is not None else []
        key = reporter.translator.get_asset_key(model)
        pdef = reporter.translator.get_partitions_def(model, reporter.project) if window else None
        if pdef is None:
            latest = context.instance.get_latest_materialization_event(key)
            tags = latest.asset_materialization.tags if latest and latest.asset_materialization else {}
            if computed or (tags or {}).get("dagster/code_version") == state.fingerprint:
                continue
        else:
            done = set(keys_of_intervals(pdef, computed))
            wanted = [k for k in reporter.partitions(model) or [] if k not in done]
            shown = shown_versions(context.instance, key, wanted) if wanted else {}
            missing = {k for k in wanted if shown.get(k, "") != state.fingerprint}
            if not missing.intersection(keys_of_intervals(pdef, state.intervals)):
                continue
        for event in reporter.held_results(model, state.intervals, state.fingerprint):
            if pdef is not None and event.partition not in missing:
                continue
            count += 1
            if key in context.selected_asset_keys:
                yield event
            else:
                context.log_event(event)
    if count:
        context.log.info(
            f"{count} selected interval(s) were already built in SQLMesh's state: recorded as such"
        )
    return count


def _computed_whole(
    reporter: Reporter, model: ModelInfo, record: Any, window: tuple[datetime, datetime] | None
) -> bool:
    """Whether this run computed all of the model's part of the window (nothing can be left
    that SQLMesh held without computing it)."""
    outcome = record.outcomes.get(model.fqn)
    if outcome is None or not outcome.batches_done:
        return False
    pdef = reporter.translator.get_partitions_def(model, reporter.project) if window else None
    if pdef is None:
        return True
    return set(keys_of_intervals(pdef, list(outcome.intervals))) >= set(reporter.partitions(model) or [])


class StageTimer:
    """Logs how long each stage of a run took, so slow steps are visible in the run's logs."""

    def __init__(self, log: Any) -> None:
        self.log = log

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.log.info(f"{stage}: {time.monotonic() - started:.2f}s")


def partition_window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime] | None:
    """The run's time window [start, end): a range, or a single key (schedules, sensors)."""
    if not (context.has_partition_key_range or context.has_partition_key):
        return None
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)
