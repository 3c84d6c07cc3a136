"""``PIPELINES_ENV=prod`` on real parts: one PostgreSQL for all metadata, S3 for all data.

Dagster's run/event storage, SQLMesh's state and DuckLake's catalog live in three databases of
one PostgreSQL server; raw Parquet and DuckLake's data files land in a bucket of the S3 server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from pipelines.settings import Settings
from pipelines.sources import demo
from pipelines.sources.readers import start_demo_rates_api
from pipelines_tests.conftest import Deployment
from pipelines_tests.services import PostgresServer, S3Env

DAYS = ["2026-04-06", "2026-04-07"]


@pytest.fixture
def prod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[Deployment]:
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = {
        "PIPELINES_ENV": "prod",
        "SQLMESH_GATEWAY": "prod",
        "PIPELINES_LAKE_URI": s3_env.uri("lake"),
        "PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "PIPELINES_BRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PIPELINES_DUCKLAKE_DB": dbs["ducklake"],
        "PIPELINES_SQLMESH_STATE_DB": dbs["sqlmesh"],
        "PIPELINES_DEMO_SEED": "1",  # the demo plays the shop: it fills the PostgreSQL shop DB
        "SHOP_DB_HOST": postgres_server.host,
        "SHOP_DB_PORT": str(postgres_server.port),
        "SHOP_DB_NAME": dbs["shop"],
        "SHOP_DB_USER": postgres_server.user,
        "SHOP_DB_PASSWORD": postgres_server.password,
        **postgres_server.env("PIPELINES_PG"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SQLMESH_PROJECT_DIR", raising=False)
    api = start_demo_rates_api()
    monkeypatch.setenv("PIPELINES_RATES_API_URL", f"http://127.0.0.1:{api.server_address[1]}")
    url = postgres_server.url(dbs["dagster"]).replace("postgresql://", "postgresql+psycopg2://")
    storage = {"postgres": {"postgres_url": url}}
    try:
        with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"storage": storage}) as instance:
            yield Deployment(tmp_path, Settings.from_env(), instance)
    finally:
        api.shutdown()


def test_prod_pipeline_keeps_metadata_in_postgres_and_data_on_s3(
    prod: Deployment, postgres_server: PostgresServer, s3_env: S3Env
) -> None:
    result = prod.run("*", start=DAYS[0], end=DAYS[-1])
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]

    def pg(database: str, sql: str) -> list[tuple]:
        con = postgres_server.connect(database)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            con.close()

    # Dagster run storage, SQLMesh state and the DuckLake catalog are all in PostgreSQL
    assert (
        pg(os.environ["PIPELINES_SQLMESH_STATE_DB"], "SELECT count(*) FROM sqlmesh._environments")[0][0] == 1
    )
    assert pg(os.environ["PIPELINES_DUCKLAKE_DB"], "SELECT count(*) FROM main.ducklake_table")[0][0] >= 12
    run_db = prod.instance.get_run_by_id(result.run_id)
    assert run_db is not None
    # the data files are on S3: raw partitions and DuckLake's Parquet files
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket)["Contents"]]
    assert "lake/raw/orders/ds=2026-04-06/data.parquet" in keys
    assert any(k.startswith("lake/warehouse/") and k.endswith(".parquet") for k in keys)

    # a fresh process reads the marts through DuckLake alone
    expected = sum(demo.order_count(date.fromisoformat(d), 1.0) for d in DAYS)
    code = (
        "import json; from pipelines.warehouse import connect; con = connect(read_only=True); "
        "print(json.dumps(con.execute('SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders')"
        ".fetchone()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, expected]
