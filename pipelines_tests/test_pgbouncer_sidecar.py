"""The PgBouncer sidecar of helm-values.yaml, run here from its own ConfigMap (issue 38, item 3).

Every pod runs PgBouncer beside the app: the app logs in on the loopback without a password
check (``auth_type = trust``: no key derivation per connection, and Dagster's storage makes a
connection per write), the sidecar alone logs in to PostgreSQL with SCRAM and keeps a few server
connections. ``pipelines_tests.pooler.start_sidecar`` starts the ConfigMap's ``entrypoint.sh`` and
``pgbouncer.ini``, with only the upstream, port and file paths replaced.

The slow test runs the Dagster plan job and two daily runs on the prod stack with every
PostgreSQL connection (Dagster's storage, SQLMesh state, DuckLake's catalog, locks, the shop DB)
pointed at the sidecar, as the pods are, and counts what each side saw: hundreds of client
logins at the sidecar, a handful of sessions at PostgreSQL. An app that bypassed the sidecar
would show no logins there and its own sessions at the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from pipelines.platform.settings import Settings
from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.pooler import PgBouncer, pgbouncer_binary, start_sidecar, stop_pgbouncer
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

DAYS = ["2026-04-06", "2026-04-07"]
DBS = ("dagster", "sqlmesh", "ducklake", "shop")
SELECTION = "key:raw/web_events or key:staging/stg_web_events or key:marts/web_funnel"
# the most server sessions one pod may open for the whole test: a few per database it uses
HANDFUL = 12


@pytest.fixture
def sidecar(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed: apt-get install -y pgbouncer (Debian package)")
    bouncer = start_sidecar(postgres_server)
    try:
        yield bouncer
    finally:
        stop_pgbouncer(bouncer)


def server_sessions(server: PostgresServer, databases: list[str]) -> int:
    """Sessions PostgreSQL has established to ``databases`` so far (cumulative statistics)."""
    time.sleep(1.5)  # ended backends flush their statistics within a second
    con = server.connect()
    try:
        with con.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(
                "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = ANY(%s)",
                (databases,),
            )
            return int(cur.fetchone()[0])
    finally:
        con.close()


def test_the_sidecar_logs_apps_in_without_a_password_and_the_server_with_scram(
    sidecar: PgBouncer, postgres_server: PostgresServer
) -> None:
    """No password on the loopback (nothing to derive a key from), SCRAM at the server, which
    refuses the same password-less login."""
    database = postgres_server.create_database()
    con = psycopg2.connect(
        host=sidecar.host, port=sidecar.port, user=postgres_server.user, dbname=database, sslmode="disable"
    )
    try:
        with con.cursor() as cur:
            cur.execute("SELECT current_user, inet_client_addr() IS NOT NULL")
            assert cur.fetchone() == (postgres_server.user, True)
    finally:
        con.close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            dbname=database,
            password="",
            sslmode="disable",
        ).close()
    # a login the auth file does not know is refused even on the loopback
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(
            host=sidecar.host, port=sidecar.port, user="intruder", dbname=database, sslmode="disable"
        ).close()
    start = time.perf_counter()
    for _ in range(100):
        psycopg2.connect(
            host=sidecar.host,
            port=sidecar.port,
            user=postgres_server.user,
            dbname=database,
            sslmode="disable",
        ).close()
    per_login = (time.perf_counter() - start) / 100
    logins = sidecar.logins(database)
    stop_pgbouncer(sidecar)  # its server connections end, so PostgreSQL has counted them
    opened = server_sessions(postgres_server, [database])
    print(f"sidecar: {logins} logins, {per_login * 1000:.2f} ms each; server sessions: {opened}")
    assert logins >= 101 and opened <= 2  # one pooled server connection served every login


@contextmanager
def prod_through_sidecar(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server: PostgresServer,
    s3_env: S3Env,
    sidecar: PgBouncer,
) -> Iterator[tuple[Deployment, dict[str, str]]]:
    """The prod stack with every PostgreSQL connection on the sidecar, as the pods have it:
    127.0.0.1, ``sslmode=disable``, no password in Dagster's storage URL."""
    dbs = {name: server.create_database() for name in DBS}
    env = build_prod_env(server, s3_env, tmp_path, dbs)
    host, port = sidecar.host, str(sidecar.port)
    env.update(
        PIPELINES_PG_HOST=host,
        PIPELINES_PG_PORT=port,
        SHOP_DB_HOST=host,
        SHOP_DB_PORT=port,
        PIPELINES_PG_SSLMODE="disable",
    )
    url = f"postgresql+psycopg2://{server.user}@{host}:{port}/{dbs['dagster']}?sslmode=disable"
    with (
        prod_environment(monkeypatch, env),
        dg.instance_for_test(
            temp_dir=str(tmp_path), overrides={"storage": {"postgres": {"postgres_url": url}}}
        ) as instance,
    ):
        yield Deployment(tmp_path, Settings.from_env(), instance), dbs


@pytest.mark.slow
def test_a_run_through_the_sidecar_opens_a_handful_of_server_sessions(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
    s3_env: S3Env,
    sidecar: PgBouncer,
) -> None:
    with prod_through_sidecar(tmp_path, monkeypatch, postgres_server, s3_env, sidecar) as (prod, dbs):
        databases = list(dbs.values())
        start = server_sessions(postgres_server, databases)  # creating them left none open
        plan = prod.definitions().resolve_job_def("sqlmesh_plan").execute_in_process(instance=prod.instance)
        assert plan.success
        for day in DAYS:
            result = prod.run(SELECTION, start=day, end=day)
            assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
            checks = check_results(result)
            assert checks and all(c.passed for k, c in checks.items() if k[1] != "freshness"), checks
        logins = {role: sidecar.logins(db) for role, db in dbs.items()}
        pools = [p for p in sidecar.admin("SHOW POOLS") if p["database"] in databases]
    stop_pgbouncer(sidecar)  # its server connections end, so PostgreSQL has counted them all
    opened = server_sessions(postgres_server, databases) - start
    print(f"plan + {len(DAYS)} runs: client logins at the sidecar {logins}; server sessions {opened}")
    print("SHOW POOLS:", pools)
    # every app went through the sidecar (web_events come from file drops: no shop login)
    assert logins["dagster"] > 100 and logins["sqlmesh"] >= 1 and logins["ducklake"] >= 1, logins
    # and the server saw only the sidecar's few pooled connections
    assert 0 < opened <= HANDFUL, (opened, logins)
    assert opened * 20 < sum(logins.values())
