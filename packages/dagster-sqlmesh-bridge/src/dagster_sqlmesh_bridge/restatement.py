"""Marking intervals not done in SQLMesh's state, as SQLMesh's own restatement does: the named
models and, unless told otherwise, every model downstream of them (their intervals were
computed from the data being replaced)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dagster_sqlmesh_bridge.locks import model_locks, postgres_state
from dagster_sqlmesh_bridge.timeutil import UTC

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.resource import SQLMeshResource


def remove_intervals(
    ctx: Any,
    environment: str,
    names: Sequence[str],
    window: tuple[datetime, datetime] | None,
    log: Any,
    verb: str = "restating",
) -> int:
    """Mark ``names`` not done over ``window`` (everything when None) in ``environment``'s
    versions of them (the public ``StateSync.remove_intervals``); returns how many were found."""
    env = ctx.state_sync.get_environment(environment)
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


@contextmanager
def intervals_not_done(
    resource: SQLMeshResource, windows: Sequence[tuple[Sequence[str], datetime, datetime]], log: Any
) -> Iterator[None]:
    """Mark each ``(models, start, end)`` window not done in SQLMesh's state, then run the
    block, holding the models' run locks throughout, so no run writes them in between.

    For a change that removes rows from the models' tables (repair's rebuild): once the state
    says "not done", any later run whose range covers the window recomputes it, scheduled or
    not, even if the process making the change dies before its own recompute."""
    names = sorted({n for models, _, _ in windows for n in models})
    ctx = resource.context()
    try:
        state = None if resource.lock_file else postgres_state(ctx.config, resource.gateway)
        with model_locks(state, names, log):
            for models, start, end in windows:
                verb = "SQLMesh state: not done,"
                done = remove_intervals(ctx, resource.environment, list(models), (start, end), log, verb=verb)
                if done < len(set(models)):
                    raise RuntimeError(
                        f"SQLMesh environment '{resource.environment}' lacks "
                        f"{len(set(models)) - done} of {sorted(models)}: apply a plan first"
                    )
            yield
    finally:
        resource.close(ctx)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
