"""The data API on the prod stack: DuckLake catalog in PostgreSQL, data on S3, a read-only role.

A one-day pipeline run writes the marts; then two API processes (two replicas) read them through
a PostgreSQL role that has only ``SELECT`` on the catalog database, and serve what the run wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import httpx
import psycopg2
import pytest

from pipelines.api.auth import token_hash
from pipelines.platform.warehouse import connect
from pipelines.shop.sources import demo
from pipelines_tests.api_server import api_process
from pipelines_tests.conftest import Deployment
from pipelines_tests.services import PostgresServer

DAY, NEXT_DAY = "2026-04-06", "2026-04-07"
TOKEN = secrets.token_urlsafe(24)

# What the API's role needs on the DuckLake catalog database (docs/api.md lists the same SQL).
READ_ONLY_ROLE_SQL = [
    'CREATE ROLE "{role}" LOGIN PASSWORD %(password)s',
    'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
    'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
    'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
]


def create_read_only_role(server: PostgresServer, database: str, schema: str = "main") -> tuple[str, str]:
    """A login role that may only read the DuckLake catalog tables of ``database``."""
    role, password = f"api_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    for target in ("postgres", database):
        con = server.connect(target)
        try:
            con.autocommit = True
            with con.cursor() as cur:
                for statement in READ_ONLY_ROLE_SQL if target == database else READ_ONLY_ROLE_SQL[:1]:
                    if target == database and statement.startswith("CREATE ROLE"):
                        continue
                    sql = statement.format(role=role, database=database, schema=schema)
                    cur.execute(sql, {"password": password})
        finally:
            con.close()
    return role, password


@pytest.mark.slow
def test_api_serves_the_marts_a_prod_run_wrote(
    prod: Deployment, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    result = prod.run("*", start=DAY, end=DAY)
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    catalog_db = os.environ["PIPELINES_DUCKLAKE_DB"]
    role, password = create_read_only_role(postgres_server, catalog_db)

    # the role really is read-only on the catalog
    ro = psycopg2.connect(
        host=postgres_server.host, port=postgres_server.port, user=role, password=password, dbname=catalog_db
    )
    try:
        with ro.cursor() as cur:
            cur.execute("SELECT count(*) FROM main.ducklake_table")
            assert cur.fetchone()[0] >= 12
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM main.ducklake_snapshot")
    finally:
        ro.close()

    with connect(prod.settings, read_only=True) as con:  # the pipeline's own view, for comparison
        revenue = con.execute(
            "SELECT order_date::VARCHAR, orders, revenue_usd FROM marts.daily_revenue ORDER BY 1"
        ).fetchall()
    assert [r[0] for r in revenue] == [DAY]

    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINES_PG_USER", "PIPELINES_PG_PASSWORD")}
    env.update(
        {
            "PIPELINES_API_PG_USER": role,
            "PIPELINES_API_PG_PASSWORD": password,
            "PIPELINES_API_KEYS": json.dumps({token_hash(TOKEN): "*"}),
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with ExitStack() as stack:
        # replica 1 re-attaches the catalog on every request (TTL 0), replica 0 keeps its attachment
        replicas = [
            stack.enter_context(
                api_process({**env, "PIPELINES_API_CONNECTION_TTL": ttl}, tmp_path / f"api-{i}.log")
            )
            for i, ttl in enumerate(("300", "0"))
        ]
        for api in replicas:
            ready = httpx.get(f"{api.url}/ready", timeout=60)
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready"}  # a probe learns nothing about the data
            detailed = httpx.get(f"{api.url}/ready", headers=auth, timeout=60)
            assert detailed.json() == {"status": "ready", "env": "prod", "datasets": 5}

        def orders_total(url: str) -> int:
            page = httpx.get(f"{url}/datasets/fct_orders/rows", params={"limit": 5}, headers=auth, timeout=60)
            assert page.status_code == 200, page.text
            return page.json()["total"]

        with ThreadPoolExecutor(4) as pool:  # both replicas at once
            totals = list(pool.map(orders_total, [a.url for a in replicas] * 3))
        assert totals == [demo.order_count(date.fromisoformat(DAY), 1.0)] * 6

        rows = httpx.get(f"{replicas[1].url}/datasets/daily_revenue/rows", headers=auth, timeout=60).json()
        served = [(r["order_date"], r["orders"], r["revenue_usd"]) for r in rows["rows"]]
        assert served == [(d, o, pytest.approx(float(v))) for d, o, v in revenue]
        assert httpx.get(f"{replicas[0].url}/datasets", timeout=60).status_code == 401

        # latency, for docs/benchmarks.md: each request attaches the catalog afresh
        timings = {}
        for url in ("/ready", "/datasets/daily_revenue/rows", "/datasets/fct_orders/rows?limit=100"):
            samples = []
            for _ in range(10):
                started = time.perf_counter()
                assert httpx.get(replicas[0].url + url, headers=auth, timeout=60).status_code == 200
                samples.append(time.perf_counter() - started)
            timings[url] = (statistics.median(samples), max(samples))
        print("API latency on the prod stack (median, max seconds):", json.dumps(timings))

        # a later run's data is served by the running replicas (kept attachments see new snapshots)
        later = prod.run("*", start=NEXT_DAY, end=NEXT_DAY)
        assert later.success
        expected = sum(demo.order_count(date.fromisoformat(d), 1.0) for d in (DAY, NEXT_DAY))
        assert [orders_total(a.url) for a in replicas] == [expected, expected]
    for api in replicas:
        logs = api.logs()
        assert TOKEN not in logs and password not in logs
        assert "API credentials: PIPELINES_API_KEYS" in logs
