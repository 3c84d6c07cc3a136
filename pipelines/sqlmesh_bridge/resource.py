"""Runs SQLMesh for exactly the Dagster selection and partition range, and reports the truth."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg
from pydantic import Field

from pipelines.sqlmesh_bridge.locks import connect_state, file_lock, model_locks, postgres_state
from pipelines.sqlmesh_bridge.plan_outcome import PlanOutcome, describe_plan, short_name
from pipelines.sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo
from pipelines.sqlmesh_bridge.translator import SQLMeshTranslator, partition_keys_in_window

if TYPE_CHECKING:  # importing SQLMesh costs seconds: only runs pay for it
    from pipelines.sqlmesh_bridge.events import AuditCollector, AuditFailure, RecordingConsole, RunRecord

log = logging.getLogger(__name__)


@dataclass
class ModelReport:
    """What a hook adds to one model's materialization: metadata and check results."""

    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


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
    """Says which inputs of a plan's recomputation cannot be read any more (expired, archived),
    so a plan never rebuilds a model's history from data that is gone.

    ``unavailable`` gets, per external model (``schema.table``) that the rebuilt models read,
    the ``[start, end)`` ranges they are rebuilt over; it returns one line per source and
    reason naming the days (empty: everything is there)."""

    def unavailable(self, needs: Mapping[str, Sequence[tuple[datetime, datetime]]]) -> list[str]: ...


class PlanRefused(dg.Failure):
    """Nothing was applied: the plan would rebuild history whose inputs are gone."""


class SQLMeshPlanRequired(dg.Failure):
    """The project differs from the target environment: a plan must be applied first."""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# The PostgreSQL advisory lock every plan application of this bridge holds on the SQLMesh state
# database (advisory locks are per database: deployments with their own state database never
# wait for each other). Constant, so operators can find its holder in pg_locks.
PLAN_LOCK_KEY = int.from_bytes(b"sqlmplan", "big")
# How long one wait for the lock blocks in libpq before Python gets control back (and logs), so
# a run terminated while it waits stops promptly.
_PLAN_LOCK_POLL = "30s"


# Held while a process first reads the SQLMesh state: SQLMesh creates (migrates) the state
# tables on that first read, and two first runs of a fresh deployment doing so at once fail one
# of them ("current transaction is aborted"). A key of its own, so it never waits for a plan.
STATE_INIT_LOCK_KEY = int.from_bytes(b"sqlmstat", "big")


@contextmanager
def postgres_advisory_lock(state: Any, log: Any, key: int, what: str, doing: str) -> Iterator[None]:
    """Hold ``pg_advisory_lock(key)`` on the database of ``state`` (SQLMesh's
    ``PostgresConnectionConfig``), on a connection of its own; ``what`` names the lock and
    ``doing`` what its holder does, in the logs.

    Session-level and autocommit, so SQLMesh's own transactions are unaffected; closing the
    connection releases it, and PostgreSQL does so too when the holding process dies. The
    password comes from ``state`` (built from the environment) and is never logged.
    """
    from psycopg2 import errors

    con = connect_state(state, f"pipelines {what}")
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if not cur.fetchone()[0]:
                log.info(
                    f"another process is {doing} (advisory lock {key} "
                    f"on database '{state.database}'): waiting for it"
                )
                started = time.monotonic()
                cur.execute(f"SET lock_timeout = '{_PLAN_LOCK_POLL}'")
                while True:
                    try:
                        cur.execute("SELECT pg_advisory_lock(%s)", (key,))
                        break
                    except errors.LockNotAvailable:
                        waited = time.monotonic() - started
                        log.info(f"still waiting for the {what} ({waited:.0f}s)")
                log.info(f"got the {what} after {time.monotonic() - started:.1f}s")
        yield
    finally:
        con.close()


def postgres_plan_lock(state: Any, log: Any) -> Iterator[None]:
    """Hold the plan lock (``PLAN_LOCK_KEY``): one SQLMesh plan application at a time."""
    return postgres_advisory_lock(state, log, PLAN_LOCK_KEY, "SQLMesh plan lock", "applying a SQLMesh plan")


class SQLMeshResource(dg.ConfigurableResource):
    """A SQLMesh project, gateway and environment that Dagster runs."""

    project_dir: str
    # the other paths of a multi-repo project
    extra_project_dirs: list[str] = []
    gateway: str | None = None
    environment: str = "prod"
    lock_file: str | None = Field(
        default=None,
        description="a file lock held around every SQLMesh run: set it when the warehouse is a "
        "single DuckDB file, so runs from several processes queue instead of failing on its lock. "
        "Without it, runs are concurrent and only plan application is serialized, by an advisory "
        "lock on the SQLMesh state database when that is PostgreSQL",
    )

    def context(
        self, console: RecordingConsole | None = None, collector: AuditCollector | None = None
    ) -> Any:
        from sqlmesh import Context
        from sqlmesh.core.console import set_console

        from pipelines.sqlmesh_bridge.context_setup import project_configs
        from pipelines.sqlmesh_bridge.events import RecordingConsole

        set_console(console or RecordingConsole())
        ctx = Context(
            paths=[self.project_dir, *self.extra_project_dirs],
            config=project_configs([self.project_dir, *self.extra_project_dirs]),
            gateway=self.gateway,
            notification_targets=[collector] if collector else None,
            load=True,
        )
        self._open_state(ctx)
        return ctx

    def _open_state(self, ctx: Any) -> None:
        """Read the SQLMesh state once, under ``STATE_INIT_LOCK_KEY`` when it is PostgreSQL and
        shared by several writers: that first read creates the state tables of a fresh
        deployment, which two processes must not do at once. Uncontended, the lock costs one
        connection. A lock file (one writer at a time) or another state engine needs none."""
        state = None if self.lock_file else postgres_state(ctx.config, self.gateway)
        if state is None:
            return
        with postgres_advisory_lock(
            state, log, STATE_INIT_LOCK_KEY, "SQLMesh state setup lock", "setting up the SQLMesh state"
        ):
            ctx.state_sync  # noqa: B018 - the property creates the state tables when missing

    # -- environment --------------------------------------------------------------------------

    def ensure_environment(self, ctx: Any, log: Any, project: ProjectInfo | None = None) -> None:
        """Create the environment on first use; refuse to run a project that differs from it.

        Creation applies the plan without backfilling: Dagster partitions decide which intervals
        get computed. Any later change to a model must go through the ``sqlmesh_plan`` job (it
        takes the plan lock) so that no scheduled run silently applies a breaking change.
        The comparison uses the cached fingerprints of ``project`` when given (no rendering).

        Creating and repairing happen under the plan lock (see ``_plan_lock``): two first runs
        of a fresh deployment would otherwise apply the same plan at once, and DuckLake fails
        both. The usual case, a finished environment, takes no lock.
        """
        env = ctx.state_sync.get_environment(self.environment)
        if env is None or not env.finalized_ts:
            with self._plan_lock(log, ctx.config) as exclusive:
                # another process may have created or finished it while this one waited
                env = ctx.state_sync.get_environment(self.environment)
                if env is None:
                    log.info(f"SQLMesh environment '{self.environment}' does not exist: creating it")
                    ctx.plan(self.environment, skip_backfill=True, auto_apply=True, no_prompts=True)
                    return
                if not env.finalized_ts and exclusive:
                    # no plan is in flight (we hold the plan lock): a process died while applying one
                    log.warning(
                        f"environment '{self.environment}' was left unfinished by a dead run: re-applying"
                    )
                    try:
                        ctx.plan(self.environment, skip_backfill=True, auto_apply=True, no_prompts=True)
                    except Exception as exc:  # finalizing now would declare a half-applied plan done
                        raise dg.Failure(
                            description=(
                                f"re-applying the plan a dead run left unfinished in environment "
                                f"'{self.environment}' failed, so it stays unfinalized: {exc}. Fix the "
                                "cause and run the `sqlmesh_plan` job."
                            )
                        ) from exc
                    env = ctx.state_sync.get_environment(self.environment)
                    if env is not None and not env.finalized_ts:
                        ctx.state_sync.finalize(env)
        deployed = {s.name: s.fingerprint.to_identifier() for s in env.snapshots}
        if project is not None:
            local = {m.fqn: m.fingerprint for m in project.internal_models}
        else:
            local = {
                name: s.fingerprint.to_identifier() for name, s in ctx.snapshots.items() if not s.is_external
            }
        changed = sorted(n for n, fp in local.items() if deployed.get(n) != fp)
        if changed and project is not None:
            # the cached fingerprints may be stale (e.g. a node restamped in state): ask SQLMesh
            live = {name: s.fingerprint.to_identifier() for name, s in ctx.snapshots.items()}
            changed = sorted(n for n in changed if deployed.get(n) != live.get(n))
        if changed:
            raise SQLMeshPlanRequired(
                description=(
                    f"the SQLMesh project differs from environment '{self.environment}' for "
                    f"{len(changed)} model(s): {', '.join(changed[:10])}. Apply the change first with "
                    "the `sqlmesh_plan` job (its logs show the plan)."
                )
            )

    def apply_plan(
        self,
        log: Any,
        allow_breaking: bool = False,
        forward_only: bool = False,
        history: HistoryCheck | None = None,
    ) -> PlanOutcome:
        """Apply local model changes to the environment; breaking ones only when allowed.

        Zero downtime: the new versions are built first, in a staging virtual environment
        (``<environment>__plan``): changed models over the intervals their previous versions had,
        new models from their start. Only then do the environment's views move to them. The
        models the plan builds are locked as a run locks them (``locks.model_locks``) from before
        their intervals are read until the views have moved, so no run adds a day to an old
        version meanwhile. When building fails, the environment is untouched and the plan fails.
        Runs of other models go on meanwhile; other plan applications wait (``_plan_lock``).

        ``history`` (the raw zone's retention and archive) is asked, under the locks, whether the
        external inputs of the rebuild can still be read; if not, nothing is applied
        (``PlanRefused``). ``forward_only`` deploys the changes forward-only instead (SQLMesh's
        forward-only plan): changed models keep their tables and history, the new logic applies
        to the intervals computed from then on, nothing is rebuilt.
        """
        from pipelines.sqlmesh_bridge.events import RecordingConsole
        from pipelines.sqlmesh_bridge.sqlmesh_private import atomic_batches

        console = RecordingConsole()
        with self._lock(log), atomic_batches(log):
            ctx = self.context(console)
            try:
                with self._plan_lock(log, ctx.config):
                    return self._apply_plan_locked(ctx, console, log, allow_breaking, forward_only, history)
            finally:
                ctx.close()

    @contextmanager
    def _plan_lock(self, log: Any, config: Any) -> Iterator[bool]:
        """Serialize plan application across processes; yield whether that is guaranteed.

        With ``lock_file`` the caller already holds it (every run and plan does): nothing to add.
        Without one (prod: several writers), plans are serialized by ``postgres_plan_lock`` on the
        SQLMesh state database when it is PostgreSQL, while model runs stay concurrent. Holding
        it proves no other plan is in flight only because every plan this bridge applies takes
        it; a bare ``sqlmesh plan`` (e.g. from CI) does not. ``config`` is the project's SQLMesh
        config (``ctx.config``). Other state engines get no lock.
        """
        if self.lock_file:
            yield True
            return
        from sqlmesh.core.config.connection import PostgresConnectionConfig

        # no state connection: SQLMesh keeps its state in the warehouse connection
        state = config.get_state_connection(self.gateway) or config.get_connection(self.gateway)
        if not isinstance(state, PostgresConnectionConfig):
            yield False
            return
        with postgres_plan_lock(state, log):
            yield True

    def _apply_plan_locked(
        self,
        ctx: Any,
        console: RecordingConsole,
        log: Any,
        allow_breaking: bool,
        forward_only: bool,
        history: HistoryCheck | None,
    ) -> PlanOutcome:
        env = ctx.state_sync.get_environment(self.environment)
        if env is None:
            ctx.plan(self.environment, skip_backfill=True, auto_apply=True, no_prompts=True)
            return describe_plan(ctx, self.environment, None, None, [])
        from sqlmesh.core.snapshot import SnapshotChangeCategory

        plan = ctx.plan_builder(self.environment, skip_backfill=True, forward_only=forward_only).build()
        previous = {s.name: s for s in env.snapshots}
        new = [s for s in plan.new_snapshots if not s.is_external]
        # a brand-new model breaks nothing: only changes to deployed models can be breaking, and
        # a forward-only change rewrites no history
        added = sorted(s.name for s in new if s.name not in previous)
        breaking = sorted(
            s.name
            for s in new
            if s.name in previous
            and s.change_category == SnapshotChangeCategory.BREAKING
            and not s.is_forward_only
        )
        for snapshot in new:
            category = snapshot.change_category.name if snapshot.change_category else "NEW"
            log.info(f"{category}{' (forward-only)' if snapshot.is_forward_only else ''}: {snapshot.name}")
            if plan.context_diff.directly_modified(snapshot.name):
                log.info(plan.context_diff.text_diff(snapshot.name))
        if breaking and not allow_breaking:
            raise dg.Failure(description="breaking changes need allow_breaking=true: " + ", ".join(breaking))
        # a new version has a new, empty table; the same version (metadata or indirect
        # non-breaking changes) keeps its table and intervals
        rebuilt = sorted(s.name for s in new if s.name in previous and s.version != previous[s.name].version)
        written = sorted({*rebuilt, *added})
        if not written:
            ctx.apply(plan)
            return describe_plan(ctx, self.environment, env, plan, [])
        # the models the plan builds, locked as a run locks them (locks.py), from before their
        # intervals are read until the views have moved: a run that held a lock has finished its
        # day into the old version (so the rebuild covers it), and no run adds one meanwhile
        reads = {d for name in written for d in ctx.get_model(name).depends_on} - set(written)
        state = None if self.lock_file else postgres_state(ctx.config, self.gateway)
        with model_locks(state, written, log, reads=reads):
            # from the state itself: the context's cache holds the intervals of when it loaded
            old = ctx.state_sync.get_snapshots([previous[n].snapshot_id for n in rebuilt]).values()
            spans = [
                (snap.intervals[0][0], snap.intervals[-1][1], snap.name)
                for snap in ctx.state_sync.refresh_snapshot_intervals(list(old))
                if snap.intervals
            ]
            if history is not None:
                _refuse_gone_history(ctx, history, spans)
            self._build_aside(ctx, console, log, spans, added, forward_only)
            # the new snapshots are in SQLMesh's state and built: this plan only moves the views
            promote = ctx.plan_builder(
                self.environment, skip_backfill=True, skip_tests=True, forward_only=forward_only
            )
            ctx.apply(promote.build())
            _drop_environment(ctx, self._staging, log)
        return describe_plan(ctx, self.environment, env, plan, spans)

    @property
    def _staging(self) -> str:
        """The virtual environment a plan builds its new versions in before the target moves."""
        return f"{self.environment}__plan"

    def _build_aside(
        self,
        ctx: Any,
        console: RecordingConsole,
        log: Any,
        spans: list[tuple[int, int, str]],
        added: list[str],
        forward_only: bool = False,
    ) -> None:
        """Build the plan's new versions in the staging environment: changed models over the
        intervals their previous versions had, new models from their start to now. A version's
        table is the same in every environment (not so for forward-only changes, which keep
        their table), so moving the target's views to them afterwards computes nothing. On
        failure the staging environment is dropped and the target, untouched, keeps its
        versions."""
        staging = self._staging
        _drop_environment(ctx, staging, log)  # one a dead plan left behind
        try:
            ctx.plan(
                staging,
                skip_backfill=True,
                skip_tests=True,
                forward_only=forward_only,
                auto_apply=True,
                no_prompts=True,
            )
            steps: list[tuple[list[str], dict[str, Any]]] = []
            if spans:
                start, end = min(s[0] for s in spans), max(s[1] for s in spans)
                names = sorted(s[2] for s in spans)
                log.info(
                    f"building {len(names)} changed model(s) over [{_iso(start)}, {_iso(end)}) before "
                    f"'{self.environment}' moves to them: {', '.join(names)}"
                )
                steps.append((names, {"start": start, "end": end - 1, "execution_time": end}))
            if added:
                log.info(f"building {len(added)} new model(s) from their start: {', '.join(added)}")
                steps.append((added, {}))
            upstream = {u for _, _, name in spans for u in ctx.dag.upstream(name)}
            if upstream & set(added):
                steps.reverse()  # a changed model reads a new one: build the new one first
            for names, kwargs in steps:
                status = ctx.run(
                    staging,
                    select_models=names,
                    no_auto_upstream=True,
                    ignore_cron=True,
                    skip_janitor=True,
                    **kwargs,
                )
                if console.record.errors or getattr(status, "name", "") == "FAILURE":
                    said = [f"{k}: {v}" for k, v in sorted(console.record.errors.items())]
                    raise RuntimeError("; ".join(said or console.record.error_messages) or "SQLMesh failed")
            _ensure_built(ctx, staging, spans)
        except Exception as exc:
            _drop_environment(ctx, staging, log)
            raise dg.Failure(
                description=(
                    f"plan not applied: building the new model versions failed, so environment "
                    f"'{self.environment}' stays on its previous versions, untouched: {exc}"
                )
            ) from exc

    # -- runs ---------------------------------------------------------------------------------

    def run(
        self,
        context: dg.AssetExecutionContext,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
        restate: bool | None = None,
        model_hook: ModelHook | None = None,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
        """Run the selected models; yield each model's results as soon as SQLMesh finished it.

        A run a person launched recomputes: a partition range is restated (a backfill always
        means "recompute") and so are unpartitioned models. Runs of schedules, sensors and
        automation (told apart by their tags) compute only what is due. Failures are raised
        after every success was reported.
        """
        from pipelines.sqlmesh_bridge.events import AuditCollector, RecordingConsole
        from pipelines.sqlmesh_bridge.sqlmesh_private import atomic_batches

        by_key = {translator.get_asset_key(m): m.fqn for m in project.internal_models}
        selected = project.topological({by_key[k] for k in context.selected_asset_keys if k in by_key})
        if not selected:  # only checks were selected: judge what the warehouse holds, run nothing
            checked = {k.asset_key for k in context.selected_asset_check_keys}
            alone = [(project.models[by_key[k]], k) for k in sorted(checked, key=str) if k in by_key]
            if alone:
                yield from self._audits_alone(context, translator, alone)
            if model_hook is not None and alone:
                yield from model_hook.checks_alone(context, alone)
            return
        window = _partition_window(context)
        if restate is None:
            restate = not is_automated(context.run.tags)
        console = RecordingConsole()
        collector = AuditCollector.new()
        timer = _StageTimer(context.log)
        # one DuckDB transaction per evaluated batch: a restated interval's DELETE and INSERT
        # commit together (sqlmesh_private.atomic_batches)
        with self._lock(context.log), atomic_batches(context.log):
            yield from self._run_locked(
                context,
                project,
                translator,
                selected,
                window,
                restate,
                model_hook,
                timer,
                console,
                collector,
            )

    def _audits_alone(
        self,
        context: dg.AssetExecutionContext,
        translator: SQLMeshTranslator,
        models: list[tuple[ModelInfo, dg.AssetKey]],
    ) -> list[dg.AssetCheckResult]:
        """The selected audits of models this run does not build: SQLMesh's own audit queries
        on the environment's tables, over the run's partition range (the whole table when the
        run names none). An audit that cannot run fails as a WARN that says why."""
        from pipelines.sqlmesh_bridge.events import audit_index

        selected = context.selected_asset_check_keys
        wanted = [
            (model, key, index, name)
            for model, key in models
            for index, audit in enumerate(model.audits)
            if dg.AssetCheckKey(key, name := translator.get_check_name(model, audit, index)) in selected
        ]
        if not wanted:
            return []
        window = _partition_window(context)
        start, end = window if window is not None else (None, datetime.now(UTC))
        ctx = self.context()
        verdicts: dict[tuple[str, int], Any] = {}
        try:
            env = ctx.state_sync.get_environment(self.environment)
            found = ctx.state_sync.get_snapshots(env.snapshots) if env is not None else {}
            snapshots = {s.name: s for s in found.values()}
            for fqn in dict.fromkeys(model.fqn for model, *_ in wanted):
                if fqn not in snapshots:
                    continue
                snapshot = snapshots[fqn]
                for r in ctx.snapshot_evaluator.audit(
                    snapshot=snapshot, snapshots=snapshots, start=start, end=end
                ):
                    verdicts[(fqn, audit_index(snapshot.model, r.audit.name, r.audit_args or {}))] = (
                        r,
                        snapshot.model.dialect,
                    )
        finally:
            _close(ctx)
        results = []
        for model, key, index, name in wanted:
            verdict, dialect = verdicts.get((model.fqn, index), (None, None))
            if verdict is None or verdict.skipped:
                why = (
                    "SQLMesh skipped this audit"
                    if verdict
                    else f"{model.name} has no table in '{self.environment}'"
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

    @contextmanager
    def _lock(self, log: Any) -> Iterator[None]:
        if not self.lock_file:
            yield
            return
        with file_lock(Path(self.lock_file), log):
            yield

    def _run_locked(
        self,
        context: dg.AssetExecutionContext,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
        selected: list[ModelInfo],
        window: tuple[datetime, datetime] | None,
        restate: bool,
        model_hook: ModelHook | None,
        timer: _StageTimer,
        console: RecordingConsole,
        collector: AuditCollector,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
        names = [m.fqn for m in selected]
        with timer("load SQLMesh context"):
            ctx = self.context(console, collector)
        reported: set[str] = set()
        locks = ExitStack()  # per-model locks (locks.py): from restatement to the end of the run
        runner: _SQLMeshThread | None = None
        try:
            with timer("check environment"):
                self.ensure_environment(ctx, context.log, project)
            kwargs: dict[str, Any] = {}
            if window is not None:
                # an exclusive datetime end: SQLMesh computes exactly the intervals inside it
                kwargs = {"start": window[0], "end": window[1], "execution_time": window[1]}
            state = None if self.lock_file else postgres_state(ctx.config, self.gateway)
            with timer("wait for model locks"):
                parents = {d for m in selected for d in m.depends_on}
                parents &= {m.fqn for m in project.internal_models}
                locks.enter_context(model_locks(state, names, context.log, reads=parents - set(names)))
            restated = [m.fqn for m in selected if m.restatable]
            if restate and restated:
                with timer("restate intervals"):
                    self._remove_intervals(ctx, restated, window, context.log)
            reporter = _Reporter(context, project, translator, ctx, collector, window, model_hook)
            console.on_finished = lambda fqn: reporter.prepare(fqn, console.record)
            with timer(f"sqlmesh run of {len(names)} model(s) {kwargs or ''}"):
                runner = _SQLMeshThread(ctx, self.environment, names, kwargs)
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
                    if model is None or fqn in reported or fqn not in names:
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
            for model in selected:
                if model.fqn not in reported:
                    yield from reporter.model_results(model, record)
            computed = [n for n in names if (o := record.outcomes.get(n)) and o.batches_done]
            if not computed and not record.errors and getattr(status, "name", "") != "FAILURE":
                yield from _nothing_computed(context, selected, translator, window)
        finally:
            if runner is not None:
                runner.halt(console, context.log)  # an interrupted step: SQLMesh stops before the locks go
            # the console stays SQLMesh's global console: drop its link to this run's context
            console.on_finished = None
            locks.close()
            _close(ctx)
            collector.close()
        _raise_on_failure(context, selected, record, status)

    @contextmanager
    def intervals_not_done(
        self, windows: Sequence[tuple[Sequence[str], datetime, datetime]], log: Any
    ) -> Iterator[None]:
        """Mark each ``(models, start, end)`` window not done in SQLMesh's state (the public
        ``StateSync.remove_intervals``, as a restatement does), then run the block, holding the
        models' run locks (locks.py) throughout, so no run writes them in between.

        For a change that removes rows from the models' tables (repair's rebuild): once the state
        says "not done", any later run whose range covers the window recomputes it, scheduled or
        not, even if the process making the change dies before its own recompute."""
        names = sorted({n for models, _, _ in windows for n in models})
        ctx = self.context()
        try:
            state = None if self.lock_file else postgres_state(ctx.config, self.gateway)
            with model_locks(state, names, log):
                for models, start, end in windows:
                    verb = "SQLMesh state: not done,"
                    done = self._remove_intervals(ctx, list(models), (start, end), log, verb=verb)
                    if done < len(set(models)):
                        raise RuntimeError(
                            f"SQLMesh environment '{self.environment}' lacks "
                            f"{len(set(models)) - done} of {sorted(models)}: apply a plan first"
                        )
                yield
        finally:
            _close(ctx)

    def _remove_intervals(
        self,
        ctx: Any,
        names: list[str],
        window: tuple[datetime, datetime] | None,
        log: Any,
        verb: str = "restating",
    ) -> int:
        env = ctx.state_sync.get_environment(self.environment)
        if env is None:
            return 0
        wanted = set(names)
        targets = [s for s in env.snapshots if s.name in wanted]
        if not targets:
            return 0
        if window is None:
            start, end = 0, _ms(datetime.now(UTC) + timedelta(days=1))
        else:
            start, end = _ms(window[0]), _ms(window[1])
        log.info(f"{verb} {len(targets)} model(s) for [{_iso(start)}, {_iso(end)})")
        ctx.state_sync.remove_intervals([(s, (start, end)) for s in targets], remove_shared_versions=True)
        return len(targets)


def _refuse_gone_history(ctx: Any, history: HistoryCheck, spans: list[tuple[int, int, str]]) -> None:
    """Raise ``PlanRefused`` naming the sources and days ``history`` says cannot be read again,
    among the external inputs of the time-partitioned models the plan rebuilds (a FULL or VIEW
    model reads its inputs' current state, not their history)."""
    needs: dict[str, list[tuple[datetime, datetime]]] = {}
    for start, end, name in spans:
        if not ctx.get_model(name).kind.is_incremental_by_time_range:
            continue
        for parent in sorted(ctx.get_model(name).depends_on):
            upstream = ctx.get_model(parent)
            if upstream is None or upstream.kind.is_external:
                needs.setdefault(short_name(parent), []).append((_dt(start), _dt(end)))
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


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _drop_environment(ctx: Any, name: str, log: Any) -> None:
    """Invalidate a virtual environment and remove its views now (its tables stay: they are
    shared with the environments using the same versions; SQLMesh's janitor expires the rest)."""
    if ctx.state_sync.get_environment(name) is None:
        return
    try:
        ctx.invalidate_environment(name, sync=True)
    except Exception as exc:  # the janitor removes it later; never a reason to fail the plan
        log.warning(f"dropping SQLMesh environment '{name}': {exc}")


def _ensure_built(ctx: Any, environment: str, spans: list[tuple[int, int, str]]) -> None:
    """Raise unless each rebuilt model's new version in ``environment`` holds every interval of
    its span: the tables the target's views are about to point at must be complete."""
    env = ctx.state_sync.get_environment(environment)
    wanted = {name: (start, end) for start, end, name in spans}
    ids = [s.snapshot_id for s in (env.snapshots if env else []) if s.name in wanted]
    found = list(ctx.state_sync.get_snapshots(ids).values())
    built = {s.name: s for s in ctx.state_sync.refresh_snapshot_intervals(found)}
    short = []
    for name, (start, end) in sorted(wanted.items()):
        covered = start
        for low, high in sorted(built[name].intervals if name in built else []):
            if low <= covered < high:
                covered = high
        if covered < end:
            short.append(f"{name} built only up to {_iso(covered)} of [{_iso(start)}, {_iso(end)})")
    if short:
        raise RuntimeError("; ".join(short))


AUTOMATION_TAGS = (
    "dagster/schedule_name",
    "dagster/sensor_name",
    "dagster/auto_materialize",
    "dagster/from_automation_condition",
    "dagster/asset_evaluation_id",
)


def is_automated(tags: Mapping[str, str]) -> bool:
    """A run a schedule, sensor or automation condition launched (it computes what is due);
    any other run was launched by a person (it recomputes what it names)."""
    return any(tag in tags for tag in AUTOMATION_TAGS)


class _SQLMeshThread(threading.Thread):
    """``Context.run`` in a thread, so results stream out while SQLMesh goes on."""

    def __init__(self, ctx: Any, environment: str, names: list[str], kwargs: dict[str, Any]) -> None:
        super().__init__(name="sqlmesh-run", daemon=True)
        self.ctx, self.environment, self.names, self.kwargs = ctx, environment, names, kwargs
        self.status: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.status = self.ctx.run(
                self.environment,
                select_models=self.names,
                no_auto_upstream=True,
                ignore_cron=True,
                skip_janitor=True,
                **self.kwargs,
            )
        except BaseException as exc:  # re-raised in the step's thread
            self.error = exc

    def halt(self, console: RecordingConsole, log: Any) -> None:
        """Stop SQLMesh before its next batch (``RecordingConsole.stop``) and wait until it has:
        the step was interrupted (run terminated, an error while reporting), and its model locks
        may only go once nothing of this run writes any more."""
        if not self.is_alive():
            return
        console.stop()
        log.warning("the step was interrupted: stopping SQLMesh after its current batch")
        started = time.monotonic()
        self.join()
        log.warning(f"SQLMesh stopped after {time.monotonic() - started:.1f}s; releasing the model locks")


def audit_check_result(
    key: dg.AssetKey, name: str, audit: AuditInfo, failing_rows: int, sql: str | None
) -> dg.AssetCheckResult:
    """A SQLMesh audit's verdict as a Dagster check result: blocking audits are ERROR."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=not failing_rows,
        severity=dg.AssetCheckSeverity.ERROR if audit.blocking else dg.AssetCheckSeverity.WARN,
        metadata={
            "failing_rows": failing_rows,
            "audit": f"{audit.name}({audit.args})",
            **({"sql": dg.MetadataValue.md(f"```sql\n{sql}\n```")} if sql else {}),
        },
    )


class _Reporter:
    """Turns one model's recorded outcome into Dagster check results and a materialization."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
        ctx: Any,
        collector: AuditCollector,
        window: tuple[datetime, datetime] | None,
        hook: ModelHook | None,
    ) -> None:
        self.context, self.project, self.translator, self.ctx = context, project, translator, ctx
        self.collector, self.window, self.hook = collector, window, hook
        self.prepared: dict[str, ModelReport] = {}

    def partitions(self, model: ModelInfo) -> list[str] | None:
        """The run's partitions in the keys of the model's own partitions definition (an
        hourly model's hours, a monthly model's months), None when the run names no range or
        the model is not time-partitioned."""
        if self.window is None or not model.time_partitioned:
            return None
        pdef = self.translator.get_partitions_def(model, self.project)
        if pdef is None:
            return None
        return partition_keys_in_window(pdef, *self.window) or None

    def prepare(self, fqn: str, record: RunRecord) -> None:
        """The report of a model SQLMesh just finished, made in SQLMesh's worker thread."""
        model = self.project.models.get(fqn)
        outcome = record.outcomes.get(fqn)
        if model is None or outcome is None or outcome.failed or not outcome.batches_done:
            return
        self.prepared[fqn] = self._report(model, sorted(set(outcome.intervals)))

    def model_results(
        self, model: ModelInfo, record: RunRecord
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        context, translator = self.context, self.translator
        key = translator.get_asset_key(model)
        outcome = record.outcomes.get(model.fqn)
        if model.fqn in record.skipped or (outcome is None and model.fqn in record.errors):
            upstream = _failed_upstream(self.project, model, record)
            context.log.warning(f"{model.name}: skipped, upstream model failed: {', '.join(upstream) or '?'}")
            return
        if outcome is None or not outcome.intervals:
            context.log.info(f"{model.name}: nothing was due, not materialized")
            return
        failures = [f for f in self.collector.failures() if f.model == model.fqn]
        runtime_error = outcome.failed and not failures
        selected_checks = context.selected_asset_check_keys
        audits = [] if runtime_error else self._audit_results(model, key, failures, selected_checks)
        if outcome.failed or not outcome.batches_done:
            yield from audits  # a blocking audit failed: no materialization for them to judge
            return
        intervals = sorted(set(outcome.intervals))
        metadata: dict[str, Any] = {
            "sqlmesh/intervals": dg.MetadataValue.json([[_iso(s), _iso(e)] for s, e in intervals]),
            "sqlmesh/batches": outcome.batches_done,
            "sqlmesh/duration_ms": outcome.duration_ms,
            "sqlmesh/fingerprint": model.fingerprint,
            "sqlmesh/audits_passed": outcome.audits_passed,
            "sqlmesh/audits_failed": outcome.audits_failed,
        }
        report = self.prepared.pop(model.fqn, None) or self._report(model, intervals)
        metadata.update(report.metadata)
        # audits and the hook's checks travel with the materialization, so they judge this one
        checks = [c for c in report.checks if dg.AssetCheckKey(key, c.check_name) in selected_checks]
        yield dg.MaterializeResult(asset_key=key, metadata=metadata, check_results=[*audits, *checks])

    def _audit_results(
        self,
        model: ModelInfo,
        key: dg.AssetKey,
        failures: list[AuditFailure],
        selected: AbstractSet[dg.AssetCheckKey],
    ) -> list[dg.AssetCheckResult]:
        """The verdicts of the model's selected SQLMesh audits in this run."""
        results = []
        for index, audit in enumerate(model.audits):
            name = self.translator.get_check_name(model, audit, index)
            if dg.AssetCheckKey(key, name) not in selected:
                continue
            failed = [f for f in failures if f.index == index]
            sql = failed[0].sql if failed else None
            results.append(audit_check_result(key, name, audit, sum(f.count for f in failed), sql))
        return results

    def _report(self, model: ModelInfo, intervals: list[tuple[int, int]]) -> ModelReport:
        """The hook's report (a profile, checks), with a row count of what was computed when
        the hook gave none."""
        key = self.translator.get_asset_key(model)
        report = ModelReport()
        if self.hook is not None:
            try:
                report = self.hook.materialized(self.ctx, model, key, self.partitions(model), self.context)
            except Exception as exc:  # metadata informs, it is never a reason to fail the run
                log.warning("no report from the hook for %s: %s", model.fqn, exc)
        if "dagster/row_count" in report.metadata:
            return report
        try:
            sql = f"SELECT count(*) FROM {model.sql_name()}{self._where(model, intervals)}"
            report.metadata["dagster/row_count"] = int(self.ctx.engine_adapter.fetchone(sql)[0])
        except Exception as exc:
            log.warning("no row count for %s: %s", model.fqn, exc)
        return report

    def _where(self, model: ModelInfo, intervals: list[tuple[int, int]]) -> str:
        """The computed range as SQLMesh's model would filter it (string time columns included)."""
        if not (self.window and model.time_partitioned and model.time_column and intervals):
            return ""
        from sqlglot import exp

        sqlmesh_model = self.ctx.get_model(model.fqn)
        dialect = sqlmesh_model.dialect
        low = sqlmesh_model.convert_to_time_column(intervals[0][0]).sql(dialect=dialect)
        high = sqlmesh_model.convert_to_time_column(intervals[-1][1]).sql(dialect=dialect)
        column = exp.to_identifier(model.time_column, quoted=True).sql(dialect=dialect)
        return f" WHERE {column} >= {low} AND {column} < {high}"


def _close(ctx: Any) -> None:
    """Close a SQLMesh context and its engine adapter (the one row counts and hooks used, if not
    the evaluator's own)."""
    ctx.close()
    try:
        ctx.engine_adapter.close()
    except Exception as exc:
        log.debug("closing the engine adapter: %s", exc)


def _failed_upstream(project: ProjectInfo, model: ModelInfo, record: RunRecord) -> list[str]:
    """Names of the failed models upstream of ``model`` (transitively)."""
    failed: list[str] = []
    stack, seen = list(model.depends_on), set()
    while stack:
        fqn = stack.pop()
        if fqn in seen:
            continue
        seen.add(fqn)
        if fqn in record.errors or ((o := record.outcomes.get(fqn)) is not None and o.failed):
            failed.append(project.models[fqn].name if fqn in project.models else fqn)
        parent = project.models.get(fqn)
        if parent is not None:
            stack.extend(parent.depends_on)
    return sorted(failed)


def _nothing_computed(
    context: dg.AssetExecutionContext,
    selected: list[ModelInfo],
    translator: SQLMeshTranslator,
    window: tuple[datetime, datetime] | None,
) -> Iterator[dg.AssetObservation]:
    """Say so in the run when SQLMesh found nothing to compute: a warning in the run's log and
    an observation per selected asset (shown on the asset) instead of a silent success."""
    span = f" for [{window[0]:%Y-%m-%d %H:%M}, {window[1]:%Y-%m-%d %H:%M})" if window else ""
    message = f"SQLMesh computed nothing{span}: every selected interval was already done or not due yet"
    context.log.warning(message)
    for model in selected:
        if window is not None and model.time_partitioned:
            continue  # an observation would need a partition: the warning says it
        yield dg.AssetObservation(
            asset_key=translator.get_asset_key(model), metadata={"sqlmesh/nothing_computed": message}
        )


class _StageTimer:
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


def _partition_window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime] | None:
    """The run's time window [start, end): a range, or a single key (schedules, sensors)."""
    if not (context.has_partition_key_range or context.has_partition_key):
        return None
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _raise_on_failure(
    context: dg.AssetExecutionContext, selected: list[ModelInfo], record: RunRecord, status: Any
) -> None:
    """Fail the step when a model failed, or when SQLMesh reported failure without naming one."""
    names = {m.fqn: m.name for m in selected}
    failed = {n: e for n, e in record.errors.items() if n in names}
    skipped = sorted(names[n] for n in record.skipped if n in names)
    if not failed:
        if getattr(status, "name", "") == "FAILURE":
            said = [f"{n}: {e}" for n, e in sorted(record.errors.items())]
            said = said or record.error_messages or record.warnings or ["no message"]
            raise dg.Failure(
                description="SQLMesh reported the run as failed without a failing model: " + "\n".join(said),
                metadata={"skipped_models": skipped},
            )
        return
    lines = [f"{names[n]}: {err}" for n, err in sorted(failed.items())]
    if skipped:
        lines.append(f"not run because an upstream model failed: {', '.join(skipped)}")
    raise dg.Failure(
        description="SQLMesh model(s) failed:\n" + "\n".join(lines),
        metadata={
            "failed_models": sorted(names[n] for n in failed),
            "skipped_models": skipped,
        },
    )
