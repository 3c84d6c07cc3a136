"""``PIPELINES_ENV=prod`` on real parts: one PostgreSQL for all metadata, S3 for all data.

Dagster's run/event storage, SQLMesh's state and DuckLake's catalog live in three databases of
one PostgreSQL server; raw Parquet and DuckLake's data files land in a bucket of the S3 server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

from pipelines.shop.sources import demo
from pipelines_tests.conftest import Deployment
from pipelines_tests.services import PostgresServer, S3Env

DAYS = ["2026-04-06", "2026-04-07"]


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
        "import json; from pipelines.platform.warehouse import connect; con = connect(read_only=True); "
        "print(json.dumps(con.execute('SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders')"
        ".fetchone()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, expected]
