"""``Context.run`` in a thread of its own, so each model's results stream out while SQLMesh
goes on, and a step that is interrupted stops SQLMesh before it lets go of its locks."""

from __future__ import annotations

import threading
import time
from typing import Any

# How long an interrupted step waits for SQLMesh to finish the batch in flight.
STOP_TIMEOUT_S = 300.0


class SQLMeshThread(threading.Thread):
    """One ``Context.run`` of the named models, with no upstream pulled in and no cron check
    (Dagster chose the models and the window)."""

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

    def halt(self, console: Any, log: Any, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop SQLMesh before its next batch (``RecordingConsole.stop``) and wait, at most
        ``timeout`` seconds, until it has: the step was interrupted (run terminated, an error
        while reporting), and its model locks may only go once nothing of this run writes any
        more. A second interrupt while waiting does not cut the wait short. Returns whether
        SQLMesh stopped; says in ``log`` which models it left unfinished."""
        if not self.is_alive():
            return True
        console.stop()
        log.warning("the step was interrupted: stopping SQLMesh after its current batch")
        started = time.monotonic()
        while self.is_alive() and time.monotonic() - started < timeout:
            try:
                self.join(0.5)
            except BaseException:  # interrupted again: the locks still wait for SQLMesh
                log.warning("interrupted again: still waiting for SQLMesh to stop before releasing its locks")
        record = console.record
        left = sorted(n for n in self.names if not (o := record.outcomes.get(n)) or not o.batches_done)
        if self.is_alive():
            log.error(
                f"SQLMesh did not stop within {timeout:.0f}s; the process must exit to release its "
                f"locks. Unfinished: {', '.join(left) or 'none'}"
            )
            return False
        log.warning(
            f"SQLMesh stopped after {time.monotonic() - started:.1f}s; unfinished: "
            f"{', '.join(left) or 'none'} (their intervals stay not done in SQLMesh's state and a "
            "rerun computes them); releasing the model locks"
        )
        return True
