"""The SQLMesh project, gateway and environment Dagster runs: where a deploy
(``deploy.py``) and a run (``run.py``) start.

Each concern lives in a module of its own: the locks (``locks.py``), the environment guard
(``environment.py``), the deploy, the run and its SQLMesh thread (``runner.py``), the events it
yields (``reporting.py``), audits run alone (``audits_alone.py``), restatement and repair support
(``restatement.py``) and the mirror of SQLMesh's state in Dagster (``mirror.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from dagster_sqlmesh_bridge.deploy import PlanRefused, deploy
from dagster_sqlmesh_bridge.environment import SQLMeshPlanRequired, ensure_environment
from dagster_sqlmesh_bridge.hooks import HistoryCheck, ModelHook, ModelReport
from dagster_sqlmesh_bridge.locks import (
    PLAN_LOCK_KEY,
    STATE_INIT_LOCK_KEY,
    file_lock,
    postgres_advisory_lock,
    postgres_plan_lock,
    postgres_state,
)
from dagster_sqlmesh_bridge.plan_outcome import PlanOutcome
from dagster_sqlmesh_bridge.project import ProjectInfo
from dagster_sqlmesh_bridge.reporting import Event
from dagster_sqlmesh_bridge.restatement import intervals_not_done
from dagster_sqlmesh_bridge.run import run_models
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

if TYPE_CHECKING:  # importing SQLMesh costs seconds: only runs pay for it
    from dagster_sqlmesh_bridge.events import AuditCollector, RecordingConsole

__all__ = [
    "PLAN_LOCK_KEY",
    "STATE_INIT_LOCK_KEY",
    "HistoryCheck",
    "ModelHook",
    "ModelReport",
    "PlanRefused",
    "SQLMeshPlanRequired",
    "SQLMeshResource",
    "postgres_plan_lock",
]

log = logging.getLogger(__name__)


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
        """A loaded ``sqlmesh.Context`` whose console records what SQLMesh does."""
        from sqlmesh import Context
        from sqlmesh.core.console import set_console

        from dagster_sqlmesh_bridge.context_setup import project_configs
        from dagster_sqlmesh_bridge.events import RecordingConsole

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

    def close(self, ctx: Any) -> None:
        """Close a context and its engine adapter (the one row counts and hooks used, if not the
        evaluator's own): a DuckDB file is free for the next process."""
        ctx.close()
        try:
            ctx.engine_adapter.close()
        except Exception as exc:
            log.debug("closing the engine adapter: %s", exc)

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

    @contextmanager
    def run_lock(self, log: Any) -> Iterator[None]:
        """The local deployment's file lock around a run or deploy (none in prod)."""
        if not self.lock_file:
            yield
            return
        with file_lock(Path(self.lock_file), log):
            yield

    def ensure_environment(self, ctx: Any, log: Any, project: ProjectInfo | None = None) -> None:
        """Create the environment on first use; refuse to run a project that differs from it
        (``environment.ensure_environment``)."""
        ensure_environment(self, ctx, log, project)

    def apply_plan(
        self,
        log: Any,
        allow_breaking: bool = False,
        forward_only: bool = False,
        history: HistoryCheck | None = None,
    ) -> PlanOutcome:
        """Deploy the project's changes with SQLMesh's own plan (``deploy.deploy``)."""
        return deploy(self, log, allow_breaking, forward_only, history)

    def run(
        self,
        context: dg.AssetExecutionContext,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
        restate: bool = False,
        model_hook: ModelHook | None = None,
        downstream: bool = True,
    ) -> Iterator[Event]:
        """Run the selected models over the run's window; yield each model's results as soon
        as SQLMesh finished it (``run.run_models``). ``restate`` recomputes what is done, and
        with ``downstream`` what was computed from it too, as SQLMesh's restatement does."""
        yield from run_models(self, context, project, translator, restate, model_hook, downstream)

    @contextmanager
    def intervals_not_done(
        self, windows: Sequence[tuple[Sequence[str], datetime, datetime]], log: Any
    ) -> Iterator[None]:
        """Mark windows not done in SQLMesh's state under the models' locks
        (``restatement.intervals_not_done``)."""
        with intervals_not_done(self, windows, log):
            yield
