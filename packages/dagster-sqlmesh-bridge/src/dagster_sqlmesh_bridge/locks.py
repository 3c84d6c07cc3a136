"""Per-model locks across processes: runs that touch the same model take turns, others overlap.

SQLMesh has no cross-process interval lock (SQLMesh issue #3866): two runs restating and
evaluating the same model at once delete once and insert twice. In prod (several pods, no shared
file) each run therefore holds a PostgreSQL advisory lock per selected model on the SQLMesh
state database while it restates and evaluates. Keys are a stable hash of the model's name, and
every run takes them in one global (sorted) order, so two runs can never deadlock. Models a run
only reads (the parents of its selection) are locked shared: readers overlap each other, but not
a run restating that model (each batch commits its DELETE and INSERT together, see
``sqlmesh_private.atomic_batches``, but a range restated in several batches or models is
only consistent once the whole run is done).

A run that waited re-reads SQLMesh's state afterwards (restatement and ``Context.run`` do), so it
recomputes its range on top of the finished run (a backfill means "recompute") or, without a
range, finds nothing left due.

Advisory locks are session-level: they need a PostgreSQL session that stays the run's. Behind
PgBouncer that means ``pool_mode = session``; ``transaction`` pooling would hand the lock to
whichever client uses the server connection next. ``model_locks`` detects it (the lock must be
visible in ``pg_locks`` under this session's backend pid, also on a second statement).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# How long one wait for a lock blocks in libpq before Python gets control back (and logs).
_POLL = "30s"
# Namespace of the model keys, so they never collide with PLAN_LOCK_KEY or other applications.
_NAMESPACE = b"pipelines.sqlmesh.model:"


class PoolerModeError(RuntimeError):
    """The PostgreSQL connection does not keep one server session (transaction pooling)."""


def model_lock_key(name: str) -> int:
    """A stable signed 64-bit key for a model's fully qualified name (same in every process)."""
    digest = hashlib.blake2b(_NAMESPACE + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def connect_state(state: Any, application: str) -> Any:
    """An autocommit psycopg2 connection to SQLMesh's PostgreSQL state database (``state`` is
    SQLMesh's ``PostgresConnectionConfig``); the password is never logged."""
    import psycopg2

    con = psycopg2.connect(
        host=state.host,
        port=state.port,
        user=state.user,
        password=state.password,
        dbname=state.database,
        sslmode=state.sslmode,
        connect_timeout=state.connect_timeout,
        keepalives_idle=state.keepalives_idle,
        application_name=application,
    )
    con.autocommit = True
    return con


def _holds(cur: Any, key: int) -> bool:
    """Whether this session's backend holds advisory lock ``key`` (as PostgreSQL splits it)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    cur.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 1",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    )
    return bool(cur.fetchone()[0])


def acquire(con: Any, keys: dict[int, bool], log: Any, what: str) -> None:
    """Take session advisory locks on ``con`` in sorted key order, waiting (and logging);
    ``keys`` maps each key to True for an exclusive lock, False for a shared one."""
    from psycopg2 import errors

    with con.cursor() as cur:
        for key in sorted(keys):
            suffix = "" if keys[key] else "_shared"
            cur.execute(f"SELECT pg_try_advisory_lock{suffix}(%s)", (key,))
            if not cur.fetchone()[0]:
                log.info(f"another run holds the lock of {what} (advisory lock {key}): waiting for it")
                started = time.monotonic()
                cur.execute(f"SET lock_timeout = '{_POLL}'")
                while True:
                    try:
                        cur.execute(f"SELECT pg_advisory_lock{suffix}(%s)", (key,))
                        break
                    except errors.LockNotAvailable:
                        log.info(f"still waiting for the lock of {what} ({time.monotonic() - started:.0f}s)")
                cur.execute("RESET lock_timeout")
                log.info(f"got the lock of {what} after {time.monotonic() - started:.1f}s")
            if not _holds(cur, key):
                raise PoolerModeError(
                    "a PostgreSQL advisory lock taken on the SQLMesh state database is not held by "
                    "the session on the next statement: a pooler in transaction mode sits in "
                    "between. Use session pooling (PgBouncer pool_mode = session) for the "
                    "state connection of the SQLMesh gateway."
                )


@contextmanager
def model_locks(state: Any, writes: list[str], log: Any, reads: Iterable[str] = ()) -> Iterator[None]:
    """Hold an exclusive advisory lock per model the run writes (``writes``) and a shared one per
    model it only reads (``reads``: a run must not read a model another run is restating), on
    the SQLMesh state database of ``state`` (SQLMesh's ``PostgresConnectionConfig``), on a
    connection of its own; closing it (or the process dying) releases them. Other state engines
    get no lock (``state`` is None)."""
    if state is None or not writes:
        yield
        return
    keys = {model_lock_key(n): False for n in reads}
    keys.update({model_lock_key(n): True for n in writes})
    con = connect_state(state, "pipelines sqlmesh model locks")
    try:
        what = writes[0] if len(writes) == 1 else f"{len(writes)} models"
        acquire(con, keys, log, what)
        yield
    finally:
        con.close()


def postgres_state(config: Any, gateway: str | None) -> Any:
    """SQLMesh's state connection config when it is PostgreSQL, else None (``config`` is
    ``Context.config``: without a state connection, state lives in the warehouse connection)."""
    from sqlmesh.core.config.connection import PostgresConnectionConfig

    state = config.get_state_connection(gateway) or config.get_connection(gateway)
    return state if isinstance(state, PostgresConnectionConfig) else None


# Lock files this process holds. SQLMesh forks worker processes (model loading, snapshot
# rendering) while a run holds its lock; a forked child shares the lock's open file, so if the
# run's process is killed an orphaned worker would keep the lock, and every later run would wait
# forever. Each forked child therefore points its copies of these descriptors at /dev/null.
_held_lock_fds: set[int] = set()


def _drop_held_locks_in_child() -> None:
    for fd in list(_held_lock_fds):
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(devnull, fd)  # the fd number stays valid; it no longer refers to the lock file
        finally:
            os.close(devnull)
    _held_lock_fds.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)


@contextmanager
def file_lock(path: Path, log: Any) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (the local deployment's run lock), waiting for it if
    another process holds it; released with the process, never inherited by forked children."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"another SQLMesh run holds {path}: waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        _held_lock_fds.add(handle.fileno())
        try:
            yield
        finally:
            _held_lock_fds.discard(handle.fileno())
            fcntl.flock(handle, fcntl.LOCK_UN)


# The PostgreSQL advisory lock every plan application of this bridge holds on the SQLMesh state
# database (advisory locks are per database: deployments with their own state database never
# wait for each other). Constant, so operators can find its holder in pg_locks.
PLAN_LOCK_KEY = int.from_bytes(b"sqlmplan", "big")
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
                cur.execute(f"SET lock_timeout = '{_POLL}'")
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
