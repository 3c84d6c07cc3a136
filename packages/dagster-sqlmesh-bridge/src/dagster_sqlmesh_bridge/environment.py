"""The environment guard: a run only ever runs the models its environment holds, and plans
(the only way a change gets there) take turns."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_sqlmesh_bridge.locks import postgres_plan_lock
from dagster_sqlmesh_bridge.project import ProjectInfo

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.resource import SQLMeshResource


class SQLMeshPlanRequired(dg.Failure):
    """The project differs from the target environment: a plan must be applied first."""


@contextmanager
def plan_lock(resource: SQLMeshResource, log: Any, config: Any) -> Iterator[bool]:
    """Serialize plan application across processes; yield whether that is guaranteed.

    With ``lock_file`` the caller already holds it (every run and plan does): nothing to add.
    Without one (prod: several writers), plans are serialized by ``postgres_plan_lock`` on the
    SQLMesh state database when it is PostgreSQL, while model runs stay concurrent. Holding it
    proves no other plan is in flight only because every plan this bridge applies takes it; a
    bare ``sqlmesh plan`` (e.g. from CI) does not. ``config`` is the project's SQLMesh config
    (``ctx.config``). Other state engines get no lock.
    """
    if resource.lock_file:
        yield True
        return
    from sqlmesh.core.config.connection import PostgresConnectionConfig

    # no state connection: SQLMesh keeps its state in the warehouse connection
    state = config.get_state_connection(resource.gateway) or config.get_connection(resource.gateway)
    if not isinstance(state, PostgresConnectionConfig):
        yield False
        return
    with postgres_plan_lock(state, log):
        yield True


def ensure_environment(
    resource: SQLMeshResource, ctx: Any, log: Any, project: ProjectInfo | None = None
) -> None:
    """Create the environment on first use; refuse to run a project that differs from it.

    Creation applies the plan without backfilling: Dagster partitions decide which intervals
    get computed. Any later change to a model must go through the ``sqlmesh_plan`` job (it
    takes the plan lock) so that no scheduled run silently applies a breaking change. The
    comparison uses the cached fingerprints of ``project`` when given (no rendering).

    Creating and repairing happen under the plan lock: two first runs of a fresh deployment
    would otherwise apply the same plan at once, and DuckLake fails both. The usual case, a
    finished environment, takes no lock.
    """
    name = resource.environment
    env = ctx.state_sync.get_environment(name)
    if env is None or not env.finalized_ts:
        with plan_lock(resource, log, ctx.config) as exclusive:
            # another process may have created or finished it while this one waited
            env = ctx.state_sync.get_environment(name)
            if env is None:
                log.info(f"SQLMesh environment '{name}' does not exist: creating it")
                ctx.plan(name, skip_backfill=True, auto_apply=True, no_prompts=True)
                return
            if not env.finalized_ts and exclusive:
                # no plan is in flight (we hold the plan lock): a process died while applying one
                log.warning(f"environment '{name}' was left unfinished by a dead run: re-applying")
                try:
                    ctx.plan(name, skip_backfill=True, auto_apply=True, no_prompts=True)
                except Exception as exc:  # finalizing now would declare a half-applied plan done
                    raise dg.Failure(
                        description=(
                            f"re-applying the plan a dead run left unfinished in environment "
                            f"'{name}' failed, so it stays unfinalized: {exc}. Fix the cause and "
                            "run the `sqlmesh_plan` job."
                        )
                    ) from exc
                env = ctx.state_sync.get_environment(name)
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
                f"the SQLMesh project differs from environment '{name}' for {len(changed)} "
                f"model(s): {', '.join(changed[:10])}. Apply the change first with the "
                "`sqlmesh_plan` job (its logs show the plan)."
            )
        )
