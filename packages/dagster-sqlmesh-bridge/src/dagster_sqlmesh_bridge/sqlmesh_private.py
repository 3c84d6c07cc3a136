"""The SQLMesh internals the bridge still relies on, guarded by the pinned version.

Three of them, each tested by ``pipelines_tests/test_sqlmesh_private.py`` so an upgrade breaks
loudly there, not silently in production:

* A run stops between batches when the console's ``start_snapshot_evaluation_progress`` raises
  (``stops_between_batches``): there is no public way to stop ``Context.run``.
* SQLMesh keeps a model's source file only in the private ``_path`` attribute (no public
  accessor in 0.236). The bridge uses it for the asset's code reference, a convenience.
* SQLMesh wraps each batch's evaluation (for an incremental model: the interval's DELETE and its
  INSERT) in ``EngineAdapter.transaction()``, but that is a no-op on DuckDB because the class
  constant ``DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS`` is False. On DuckLake the DELETE and the
  INSERT then commit as two snapshots: readers see the interval empty in between, and a run
  killed there leaves it empty. ``atomic_batches`` turns SQLMesh's own transactions on while the
  bridge runs SQLMesh, so one batch is one DuckDB transaction (one DuckLake snapshot). SQLMesh
  records the interval in its state only after the batch returns, so state never claims rows a
  rollback took back; a kill after COMMIT and before the state write recomputes the interval.
  One SQLMesh method is not ready for that on DuckDB: ``EngineAdapter.columns`` runs DESCRIBE
  through ``execute`` and reads the cursor afterwards, and ``execute``'s own transaction commits
  in between, which on DuckDB discards the result (audits of incremental models then fail with
  "Time column … not found"). While the switch is on, ``columns`` runs inside one transaction,
  as SQLMesh's ``fetchall`` does.

On any other SQLMesh version both fall back to stock behaviour (no code reference; autocommit,
with a warning) instead of relying on internals that may have changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlmesh

PINNED_SQLMESH = "0.236.4"

log = logging.getLogger(__name__)

_lock = threading.Lock()
_holders = 0
_stock: tuple[bool, Any] | None = None  # the constant, and ``columns`` if the class defined it


def stops_between_batches() -> bool:
    """Whether a run stops before its next batch when the console's
    ``start_snapshot_evaluation_progress`` raises: SQLMesh's scheduler announces each batch with
    it before evaluating and turns the exception into that node's failure, so no later batch
    starts (``RecordingConsole.stop``). Checked for the pinned version only; on another one a
    stop waits for the run to end (bounded by ``runner.STOP_TIMEOUT_S``)."""
    return sqlmesh.__version__ == PINNED_SQLMESH


def model_source_path(model: Any) -> str | None:
    """The file a model was read from, or None (unknown, or an unpinned SQLMesh version)."""
    if sqlmesh.__version__ != PINNED_SQLMESH:
        return None
    path = getattr(model, "_path", None)
    return str(path) if path else None


@contextmanager
def atomic_batches(run_log: Any = None) -> Iterator[bool]:
    """While the block runs, DuckDB adapters use SQLMesh's transactions (one transaction per
    evaluated batch); yields whether they do (on another SQLMesh version they do not, and
    ``run_log``, e.g. the Dagster run's log, gets a warning saying so).

    The switch is the adapter class's constant (SQLMesh clones adapters with ``__class__`` per
    run, so an instance attribute would not reach the evaluator), so it holds for every DuckDB
    adapter of the process while any holder is inside: nested and concurrent holders are
    counted, and the stock value comes back when the last one leaves. It needs one connection
    per evaluation thread, which ``concurrent_tasks: 1`` (the project's gateways) gives.
    """
    global _holders, _stock
    if sqlmesh.__version__ != PINNED_SQLMESH:
        (run_log or log).warning(
            f"SQLMesh {sqlmesh.__version__} is not the pinned {PINNED_SQLMESH}: restatements on "
            "DuckDB/DuckLake commit their DELETE and INSERT separately (readers may see an "
            "interval empty meanwhile, a run killed in between leaves it empty)"
        )
        yield False
        return
    from sqlmesh.core.engine_adapter import DuckDBEngineAdapter as Adapter

    with _lock:
        if _holders == 0:
            _stock = (Adapter.SUPPORTS_TRANSACTIONS, vars(Adapter).get("columns"))
            columns = Adapter.columns

            def columns_in_one_transaction(self: Any, *args: Any, **kwargs: Any) -> Any:
                with self.transaction():
                    return columns(self, *args, **kwargs)

            Adapter.SUPPORTS_TRANSACTIONS = True
            Adapter.columns = columns_in_one_transaction  # type: ignore[method-assign]
        _holders += 1
    try:
        yield True
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _stock is not None:
                Adapter.SUPPORTS_TRANSACTIONS, own_columns = _stock
                if own_columns is None:
                    del Adapter.columns
                else:
                    Adapter.columns = own_columns  # type: ignore[method-assign]
