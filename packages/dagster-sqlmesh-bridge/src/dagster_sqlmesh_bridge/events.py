"""What SQLMesh really did, learned from its console and notification callbacks.

SQLMesh's ``run`` returns one status for the whole DAG and never raises for a failing model,
so per-model truth (evaluated, failed with which error, skipped after an upstream failure,
audit failures) is recorded here as the scheduler reports it, from several worker threads.
Each model is announced on ``RecordingConsole.finished`` (a queue) the moment its last batch
is done, so the run can report it while SQLMesh goes on with the rest.

``RecordingConsole`` implements every abstract method of SQLMesh's ``Console``: the ones that
carry run outcomes are in ``HANDLED``, the display-only ones in ``IGNORED``; a test fails when
SQLMesh adds an abstract method that is in neither.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from sqlmesh.core.console import NoopConsole
from sqlmesh.core.notification_target import BaseNotificationTarget, NotificationEvent

# Console methods whose calls change what the bridge reports.
HANDLED = frozenset(
    {
        "start_evaluation_progress",
        "start_snapshot_evaluation_progress",
        "update_snapshot_evaluation_progress",
        "log_skipped_models",
        "log_failed_models",
        "log_warning",
        "log_error",
    }
)
# Console methods that only display progress or plans: NoopConsole's no-op is right for them.
IGNORED = frozenset(
    {
        "loading_start", "loading_stop", "log_additive_change", "log_destructive_change",
        "log_migration_status", "log_models_updated_during_restatement", "log_status_update",
        "log_success", "log_test_results", "plan", "print_environments",
        "show_environment_difference_summary", "show_intervals", "show_linter_violations",
        "show_model_difference_summary", "show_row_diff", "show_schema_diff", "show_sql",
        "show_table_diff", "show_table_diff_details", "show_table_diff_summary", "start_cleanup",
        "start_creation_progress", "start_destroy", "start_env_migration_progress",
        "start_plan_evaluation", "start_promotion_progress", "start_signal_progress",
        "start_snapshot_migration_progress",
        "start_state_export", "start_state_import", "start_table_diff_model_progress",
        "start_table_diff_progress", "stop_cleanup", "stop_creation_progress", "stop_destroy",
        "stop_env_migration_progress", "stop_evaluation_progress", "stop_plan_evaluation",
        "stop_promotion_progress", "stop_signal_progress", "stop_snapshot_migration_progress",
        "stop_state_export", "stop_state_import", "stop_table_diff_progress",
        "update_cleanup_progress", "update_creation_progress", "update_env_migration_progress",
        "update_promotion_progress", "update_signal_progress", "update_snapshot_migration_progress",
        "update_state_export_progress", "update_state_import_progress", "update_table_diff_progress",
    }
)  # fmt: skip


@dataclass
class ModelOutcome:
    intervals: list[tuple[int, int]] = field(default_factory=list)
    batches_done: int = 0
    batches_failed: int = 0
    batches_planned: int = 0
    duration_ms: int = 0
    rows: int | None = None
    audits_passed: int = 0
    audits_failed: int = 0
    failed: bool = False


@dataclass
class AuditFailure:
    model: str
    audit: str
    # position of the audit in the model's ``audits_with_args`` (None: not found there)
    index: int | None
    count: int
    sql: str


@dataclass
class RunRecord:
    outcomes: dict[str, ModelOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)

    def outcome(self, name: str) -> ModelOutcome:
        return self.outcomes.setdefault(name, ModelOutcome())


class RunStopped(RuntimeError):
    """The step was interrupted: SQLMesh evaluates no further batch."""


class RecordingConsole(NoopConsole):
    """A console that records evaluation events instead of printing them, and stops a run
    between batches once told to (``stop``)."""

    def __init__(self) -> None:
        super().__init__()
        self.record = RunRecord()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # fqn of each model as soon as all its planned batches are done (or one failed)
        self.finished: queue.Queue[str] = queue.Queue()
        # called with that fqn first, in SQLMesh's worker thread: the one place where queries
        # on SQLMesh's connection (row counts, profiles) are safe while the run goes on
        self.on_finished: Callable[[str], None] | None = None

    def start_evaluation_progress(self, batched_intervals: Any, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            for snapshot, intervals in batched_intervals.items():
                self.record.outcome(snapshot.name).batches_planned += len(intervals)

    def stop(self) -> None:
        """Fail every batch SQLMesh starts from now on, before it runs (SQLMesh announces each
        batch with ``start_snapshot_evaluation_progress``; the one in flight finishes)."""
        self._stopping.set()

    def start_snapshot_evaluation_progress(self, snapshot: Any, *args: Any, **kwargs: Any) -> None:
        from dagster_sqlmesh_bridge.sqlmesh_private import stops_between_batches

        if self._stopping.is_set() and stops_between_batches():
            raise RunStopped(f"not evaluated: the step was interrupted ({snapshot.name})")

    def update_snapshot_evaluation_progress(
        self,
        snapshot: Any,
        interval: Any,
        batch_idx: int,
        duration_ms: int | None,
        num_audits_passed: int,
        num_audits_failed: int,
        *args: Any,
        execution_stats: Any = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            outcome = self.record.outcome(snapshot.name)
            start, end = interval
            outcome.intervals.append((int(start), int(end)))
            if duration_ms is None:
                outcome.failed = True
                outcome.batches_failed += 1
            else:
                outcome.batches_done += 1
                outcome.duration_ms += duration_ms
                outcome.audits_passed += num_audits_passed
                outcome.audits_failed += num_audits_failed
                rows = getattr(execution_stats, "total_rows_processed", None)
                if rows is not None:
                    outcome.rows = (outcome.rows or 0) + int(rows)
            finished = outcome.batches_done + outcome.batches_failed >= outcome.batches_planned
        if finished:
            if self.on_finished is not None:
                try:
                    self.on_finished(snapshot.name)
                except Exception:  # reporting must never break SQLMesh's run
                    logging.getLogger(__name__).warning("reporting %s failed", snapshot.name, exc_info=True)
            self.finished.put(snapshot.name)

    def log_skipped_models(self, snapshot_names: set[str]) -> None:
        with self._lock:
            self.record.skipped.update(snapshot_names)

    def log_failed_models(self, errors: list[Any]) -> None:
        with self._lock:
            for error in errors:
                node = getattr(error, "node", None)
                name = getattr(node, "snapshot_name", None) or str(node)
                cause = error.__cause__ or error
                self.record.errors[name] = f"{type(cause).__name__}: {cause}"
                self.record.outcome(name).failed = True

    def log_warning(
        self, short_message: str, long_message: str | None = None, *args: Any, **kwargs: Any
    ) -> None:
        with self._lock:
            self.record.warnings.append(short_message.strip())

    def log_error(self, message: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.record.error_messages.append(message.strip())


def audit_index(model: Any, name: str, args: dict[str, Any]) -> int | None:
    """Which of ``model.audits_with_args`` an audit failure belongs to: same audit name and the
    same argument expressions (compared as SQL trees, not as rendered text)."""
    if model is None:
        return None
    candidates = [i for i, (audit, _) in enumerate(model.audits_with_args) if audit.name == name]
    for i in candidates:
        expected = model.audits_with_args[i][1]
        if all(args.get(key) == value for key, value in expected.items()):
            return i
    return candidates[0] if len(candidates) == 1 else None


class AuditCollector(BaseNotificationTarget):
    """A notification target that records every audit failure, blocking or not.

    Targets are frozen pydantic models kept in sets, so they carry only an id; the failures
    live in a registry keyed by that id for the duration of one run.
    """

    type_: Literal["pipelines_audit_collector"] = "pipelines_audit_collector"
    collector_id: str
    notify_on: frozenset[NotificationEvent] = frozenset({NotificationEvent.AUDIT_FAILURE})

    _registry: ClassVar[dict[str, list[AuditFailure]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def new(cls) -> AuditCollector:
        collector = cls(collector_id=uuid.uuid4().hex)
        with cls._lock:
            cls._registry[collector.collector_id] = []
        return collector

    def failures(self) -> list[AuditFailure]:
        with self._lock:
            return list(self._registry.get(self.collector_id, []))

    def close(self) -> None:
        with self._lock:
            self._registry.pop(self.collector_id, None)

    def notify_audit_failure(self, audit_error: Any, *args: Any, **kwargs: Any) -> None:
        model = getattr(audit_error, "model", None)
        failure = AuditFailure(
            model=getattr(model, "fqn", "") if model is not None else "",
            audit=audit_error.audit_name,
            index=audit_index(model, audit_error.audit_name, audit_error.audit_args or {}),
            count=int(audit_error.count),
            sql=audit_error.query.sql(getattr(audit_error, "adapter_dialect", None)),
        )
        with self._lock:
            self._registry.setdefault(self.collector_id, []).append(failure)

    def send(self, *args: Any, **kwargs: Any) -> None:
        return
