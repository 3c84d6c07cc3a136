"""Concurrent runs over overlapping partitions: no lock errors, no lost or duplicated intervals.

Embedded default: four processes run ``pipelines.cli.run_range`` for overlapping ranges on the
same ``DAGSTER_HOME`` (the repo's pools: one ``sqlmesh`` slot, op granularity). Threads in one
process would share DuckDB connections and prove nothing, so these are real processes.

Dagster enforces op pools for ``execute_in_process`` too: the in-process executor claims slots
through ``InstanceConcurrencyContext`` whenever the instance's storage has the concurrency
tables (SQLite and PostgreSQL storage do). The test checks it from the runs' own event logs:
no two ``sqlmesh_models`` steps overlap in time.

Prod (DuckLake on PostgreSQL + S3): two processes run different model chains at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines.settings import Settings
from pipelines.sources import demo
from pipelines.sources.readers import start_demo_rates_api
from pipelines_tests.conftest import Deployment
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.test_reliability_crash import (
    RUN_TIMEOUT,
    SELECTION,
    TIME_COLUMNS,
    Child,
    prepare_home,
    processed_days,
    start_run,
)

# every day is in two ranges; the union is 2026-03-02 .. 2026-03-04
RANGES = [
    ("2026-03-02", "2026-03-03"),
    ("2026-03-03", "2026-03-04"),
    ("2026-03-02", "2026-03-02"),
    ("2026-03-04", "2026-03-04"),
]
SLOW_RANGES = [
    ("2026-03-02", "2026-03-04"),
    ("2026-03-03", "2026-03-05"),
    ("2026-03-02", "2026-03-05"),
    ("2026-03-05", "2026-03-05"),
]


def days_between(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def wait_all(children: list[Child], timeout: float) -> list[int]:
    return [child.wait(timeout=timeout) for child in children]


def step_windows(home: str, step: str) -> list[tuple[str, datetime, datetime]]:
    """(run id, start, end) of ``step`` in every run of the instance at ``home``."""
    windows = []
    with dg.DagsterInstance.from_config(home) as instance:
        for run in instance.get_runs():
            start = end = None
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key != step:
                    continue
                if event.event_type_value == "STEP_START":
                    start = datetime.fromtimestamp(entry.timestamp)
                elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                    end = datetime.fromtimestamp(entry.timestamp)
            if start and end:
                windows.append((run.run_id, start, end))
    return sorted(windows, key=lambda w: w[1])


def test_four_overlapping_runs_on_one_instance(tmp_path: Path) -> None:
    """Ingestion and every SQLMesh model (no asset checks) in four processes at once."""
    four_overlapping_runs(tmp_path, RANGES, SELECTION)


@pytest.mark.slow
def test_four_overlapping_full_pipeline_runs(tmp_path: Path) -> None:
    """Everything (``*``: checks that read the warehouse, the report) in four processes at once."""
    four_overlapping_runs(tmp_path, SLOW_RANGES, "*")


def four_overlapping_runs(tmp_path: Path, ranges: list[tuple[str, str]], selection: str) -> None:
    env = prepare_home(tmp_path)
    # a fresh home: the four processes also race to create the instance's SQLite storage
    children = [start_run(env, start=s, end=e, selection=selection) for s, e in ranges]
    codes = wait_all(children, timeout=4 * RUN_TIMEOUT)
    outputs = "\n".join(child.tail(3000) for child in children)
    assert codes == [0, 0, 0, 0], outputs
    assert "Could not set lock" not in outputs and "database is locked" not in outputs

    union = sorted({d for s, e in ranges for d in days_between(s, e)})
    data = tmp_path / "data"
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        revenue = con.execute(
            "SELECT order_date::VARCHAR, orders FROM marts.daily_revenue ORDER BY 1"
        ).fetchall()
        orders = con.execute("SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders").fetchone()
        funnel = con.execute("SELECT count(*), count(DISTINCT event_date) FROM marts.web_funnel").fetchone()
    finally:
        con.close()
    expected = {d: demo.order_count(date.fromisoformat(d), 1.0) for d in union}
    assert dict(revenue) == expected  # exactly one row per day, nothing lost
    total = sum(expected.values())
    assert orders == (total, total)  # no duplicated order
    assert funnel == (len(union), len(union))
    assert processed_days(data) == {model: union for model in TIME_COLUMNS}

    # the sqlmesh pool (one slot) serialized the SQLMesh steps across the four processes
    windows = step_windows(env["DAGSTER_HOME"], "sqlmesh_models")
    assert len(windows) == 4
    for (_, _, first_end), (_, second_start, _) in zip(windows, windows[1:], strict=False):
        assert second_start >= first_end, windows


# ---------------------------------------------------------------------------------- DuckLake

PROD_DAYS = ["2026-04-06", "2026-04-07"]
PROD_KEYS = ("PIPELINES_", "SQLMESH_", "SHOP_DB_", "AWS_")
WEB_CHAIN = "nochecks:key:staging/stg_web_events or key:marts/web_funnel"
# fct_orders audits its customers against dim_customers: the chain includes the customer models
ORDER_CHAIN = (
    "nochecks:key:staging/stg_orders or key:staging/stg_order_items or key:staging/stg_fx_rates "
    "or key:staging/stg_products or key:staging/stg_customers or key:marts/dim_customers "
    "or key:intermediate/int_order_lines or key:marts/fct_orders or key:marts/daily_revenue"
)


@pytest.fixture
def prod_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[dict[str, str]]:
    """The prod settings (as in test_prod_stack.py) in this process's environment; yields it."""
    dbs = {name: postgres_server.create_database() for name in ("sqlmesh", "ducklake", "shop")}
    env = {
        "PIPELINES_ENV": "prod",
        "SQLMESH_GATEWAY": "prod",
        "PIPELINES_LAKE_URI": s3_env.uri("lake"),
        "PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "PIPELINES_BRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PIPELINES_DUCKLAKE_DB": dbs["ducklake"],
        "PIPELINES_SQLMESH_STATE_DB": dbs["sqlmesh"],
        "PIPELINES_DEMO_SEED": "1",
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
    try:
        yield dict(os.environ)
    finally:
        api.shutdown()


def prod_state_days(postgres_server: PostgresServer, database: str) -> dict[str, list[str]]:
    from sqlmesh.core.config.connection import PostgresConnectionConfig
    from sqlmesh.core.state_sync import EngineAdapterStateSync

    config = PostgresConnectionConfig(
        host=postgres_server.host,
        port=postgres_server.port,
        user=postgres_server.user,
        password=postgres_server.password,
        database=database,
    )
    adapter = config.create_engine_adapter()
    try:
        state = EngineAdapterStateSync(adapter, schema="sqlmesh")
        env = state.get_environment("prod")
        assert env is not None
        out: dict[str, list[str]] = {}
        for snap in state.get_snapshots(env.snapshots).values():
            if snap.is_model and snap.model.kind.is_incremental_by_time_range and snap.intervals:
                name = ".".join(p.strip('"') for p in snap.name.split(".")[-2:])
                start_ms, end_ms = snap.intervals[0][0], snap.intervals[-1][1]
                first = datetime.utcfromtimestamp(start_ms / 1000).date()
                count = (end_ms - start_ms) // 86_400_000
                out[name] = [(first + timedelta(days=i)).isoformat() for i in range(count)]
        return out
    finally:
        adapter.close()


def test_two_model_chains_run_concurrently_on_ducklake(
    prod_env: dict[str, str], tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The environment exists (the ``sqlmesh_plan`` job ran): two chains at once both succeed."""
    two_chains_on_ducklake(prod_env, tmp_path, postgres_server, create_environment_first=True)


@pytest.mark.slow
def test_two_first_runs_on_a_fresh_ducklake_deployment(
    prod_env: dict[str, str], tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """No environment yet: both runs create it at once (``ensure_environment``) and must not fail.

    Fails today: both apply the plan concurrently and DuckLake refuses one of each pair of
    ``CREATE TABLE`` for the same physical table ("Transaction conflict … has been created by
    another transaction already"); both runs fail.
    """
    two_chains_on_ducklake(prod_env, tmp_path, postgres_server, create_environment_first=False)


def two_chains_on_ducklake(
    prod_env: dict[str, str], tmp_path: Path, postgres_server: PostgresServer, create_environment_first: bool
) -> None:
    from pipelines_tests.conftest import RANGE_END, RANGE_START

    (tmp_path / "ingest").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "ingest")) as instance:
        defs = Deployment(tmp_path, Settings.from_env(), instance).definitions()
        job = dg.define_asset_job("ingest", selection="group:raw")
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        tags = {RANGE_START: PROD_DAYS[0], RANGE_END: PROD_DAYS[-1]}
        assert defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=tags).success
        if create_environment_first:
            assert defs.resolve_job_def("sqlmesh_plan").execute_in_process(instance=instance).success

    # no pools: both SQLMesh steps run at the same time (prod allows two, see deploy/dagster-prod.yaml)
    env = {
        **prepare_home(tmp_path / "runs"),
        **{k: v for k, v in prod_env.items() if k.startswith(PROD_KEYS)},
    }
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    children = [
        start_run(env, start=PROD_DAYS[0], end=PROD_DAYS[-1], selection=chain)
        for chain in (WEB_CHAIN, ORDER_CHAIN)
    ]
    codes = wait_all(children, timeout=2 * RUN_TIMEOUT)
    assert codes == [0, 0], "\n".join(child.tail(3000) for child in children)

    from pipelines.warehouse import connect

    con = connect(read_only=True)
    try:
        funnel = con.execute("SELECT count(*), count(DISTINCT event_date) FROM marts.web_funnel").fetchone()
        orders = con.execute("SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders").fetchone()
        revenue = con.execute("SELECT count(*) FROM marts.daily_revenue").fetchone()
    finally:
        con.close()
    expected = sum(demo.order_count(date.fromisoformat(d), 1.0) for d in PROD_DAYS)
    assert funnel == (2, 2) and orders == (expected, expected) and revenue == (2,)
    days = prod_state_days(postgres_server, prod_env["PIPELINES_SQLMESH_STATE_DB"])
    for model in ("staging.stg_web_events", "marts.web_funnel", "marts.fct_orders", "marts.daily_revenue"):
        assert days.get(model) == PROD_DAYS, (model, days)
