"""PostgreSQL behind a pooler (PgBouncer here, RDS Proxy in AWS): runs, checks and locks still work.

Every PostgreSQL connection of the prod stack (Dagster's storage, SQLMesh state, DuckLake's
catalog, the plan and model locks) goes through a real PgBouncer in session pooling mode. The
test counts client logins (PgBouncer's log) and the sessions PostgreSQL itself opened
(``pg_stat_database.sessions``) per run, direct and through the pooler.

Session-level advisory locks need session pooling: under transaction pooling a second client
"takes" a lock the first one holds (both run on the same server connection), shown below.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pytest

from dagster_sqlmesh_bridge.locks import model_lock_key, model_locks
from dagster_sqlmesh_bridge.resource import PLAN_LOCK_KEY, postgres_plan_lock
from pipelines.platform.settings import Settings
from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

if TYPE_CHECKING:
    from pipelines_tests.pooler import PgBouncer


DAYS = ["2026-04-06", "2026-04-07"]
DBS = ("dagster", "sqlmesh", "ducklake", "shop")
SELECTION = "key:raw/web_events or key:staging/stg_web_events or key:marts/web_funnel"


class ListLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def sessions(server: PostgresServer, dbs: dict[str, str]) -> dict[str, int]:
    """Sessions PostgreSQL has established per database so far (its cumulative statistics)."""
    time.sleep(1.5)  # ended backends flush their statistics within a second
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(
                "SELECT datname, sessions FROM pg_stat_database WHERE datname = ANY(%s)",
                (list(dbs.values()),),
            )
            by_name = dict(cur.fetchall())
    finally:
        con.close()
    return {role: int(by_name.get(name, 0)) for role, name in dbs.items()}


def state_config(host: str, port: int, server: PostgresServer, database: str) -> Any:
    from sqlmesh.core.config.connection import PostgresConnectionConfig

    return PostgresConnectionConfig(
        host=host, port=port, user=server.user, password=server.password, database=database
    )


def holders(server: PostgresServer, key: int) -> int:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = %s AND objid = %s",
                (unsigned >> 32, unsigned & 0xFFFFFFFF),
            )
            return int(cur.fetchone()[0])
    finally:
        con.close()


def test_plan_and_model_locks_hold_behind_session_pooling(
    pgbouncer: PgBouncer, postgres_server: PostgresServer
) -> None:
    db = postgres_server.create_database()
    state = state_config(pgbouncer.host, pgbouncer.port, postgres_server, db)
    key = model_lock_key('"lake"."marts"."web_funnel"')
    with postgres_plan_lock(state, ListLog()), model_locks(state, ['"lake"."marts"."web_funnel"'], ListLog()):
        assert holders(postgres_server, PLAN_LOCK_KEY) == 1 and holders(postgres_server, key) == 1
        other = pgbouncer.connect(db)  # another client of the pooler cannot take either lock
        try:
            other.autocommit = True
            with other.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s), pg_try_advisory_lock(%s)", (PLAN_LOCK_KEY, key))
                assert cur.fetchone() == (False, False)
        finally:
            other.close()
    assert holders(postgres_server, PLAN_LOCK_KEY) == 0 and holders(postgres_server, key) == 0


def test_transaction_pooling_breaks_advisory_locks(
    pgbouncer_transaction: PgBouncer, postgres_server: PostgresServer
) -> None:
    """Why the deployment needs session pooling: two clients both get one exclusive lock."""
    db = postgres_server.create_database()
    first, second = pgbouncer_transaction.connect(db), pgbouncer_transaction.connect(db)
    try:
        got = []
        for con in (first, second):
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PLAN_LOCK_KEY,))
                got.append(cur.fetchone()[0])
        assert got == [True, True]
    finally:
        first.close()
        second.close()


@contextmanager
def prod_through(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: PostgresServer,
    s3_env: S3Env,
    host: str,
    port: int,
) -> Iterator[tuple[Deployment, dict[str, str]]]:
    """The prod stack with every PostgreSQL connection going to ``host:port``."""
    dbs = {name: server.create_database() for name in DBS}
    env = build_prod_env(server, s3_env, tmp_path, dbs)
    env.update(PIPELINES_PG_HOST=host, PIPELINES_PG_PORT=str(port), SHOP_DB_HOST=host, SHOP_DB_PORT=str(port))
    url = f"postgresql+psycopg2://{server.user}:{server.password}@{host}:{port}/{dbs['dagster']}"
    with (
        prod_environment(monkeypatch, env),
        dg.instance_for_test(
            temp_dir=str(tmp_path), overrides={"storage": {"postgres": {"postgres_url": url}}}
        ) as instance,
    ):
        yield Deployment(tmp_path, Settings.from_env(), instance), dbs


@pytest.fixture
def pooled_prod(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
    s3_env: S3Env,
    pgbouncer: PgBouncer,
) -> Iterator[tuple[Deployment, dict[str, str]]]:
    with prod_through(tmp_path, monkeypatch, postgres_server, s3_env, pgbouncer.host, pgbouncer.port) as out:
        yield out


def test_server_sessions_per_run_without_a_pooler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> None:
    """The baseline: every client connection is a PostgreSQL session."""
    with prod_through(
        tmp_path, monkeypatch, postgres_server, s3_env, postgres_server.host, postgres_server.port
    ) as (prod, dbs):
        assert (
            prod.definitions()
            .resolve_job_def("sqlmesh_plan")
            .execute_in_process(instance=prod.instance)
            .success
        )
        figures = []
        for day in DAYS:
            before = sessions(postgres_server, dbs)
            assert prod.run(SELECTION, start=day, end=day).success
            after = sessions(postgres_server, dbs)
            figures.append({k: after[k] - before[k] for k in dbs})
        print("server sessions per run without a pooler:", figures)
        assert all(sum(f.values()) > 20 for f in figures), figures


def test_runs_checks_and_plan_work_behind_pgbouncer(
    pooled_prod: tuple[Deployment, dict[str, str]], pgbouncer: PgBouncer, postgres_server: PostgresServer
) -> None:
    prod, dbs = pooled_prod
    assert (
        prod.definitions().resolve_job_def("sqlmesh_plan").execute_in_process(instance=prod.instance).success
    )
    figures = []
    for day in DAYS:
        logins, before = pgbouncer.logins(), sessions(postgres_server, dbs)
        result = prod.run(SELECTION, start=day, end=day)
        assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
        checks = check_results(result)
        # every check ran and passed, but freshness (the test's days are months old)
        assert checks and all(c.passed for k, c in checks.items() if k[1] != "freshness"), checks
        after = sessions(postgres_server, dbs)
        server = {k: after[k] - before[k] for k in dbs}
        figures.append((pgbouncer.logins() - logins, server))
    print("client logins, server sessions per run through PgBouncer:", figures)
    pools = pgbouncer.admin("SHOW POOLS")
    print("SHOW POOLS:", pools)
    # the second run reuses the pooler's server connections: PostgreSQL opens (almost) none
    clients, server = figures[-1]
    assert clients > 0 and sum(server.values()) <= 5, figures
