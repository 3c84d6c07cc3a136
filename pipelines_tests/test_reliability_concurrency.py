"""Concurrent runs over overlapping partitions: no lock errors, no lost or duplicated intervals.

Embedded default: four processes run ``pipelines.ops.cli.run_range`` for overlapping ranges on the
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
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from dagster_sqlmesh_bridge import locks as bridge_locks
from dagster_sqlmesh_bridge.resource import PLAN_LOCK_KEY, STATE_INIT_LOCK_KEY, SQLMeshResource
from pipelines.platform.settings import Settings
from pipelines.shop.sources import demo
from pipelines_tests.conftest import Deployment
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.sqlmesh_projects import write_project
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
    """The shared prod settings (``prod_env.py``) in this process's environment; yields it."""
    dbs = {name: postgres_server.create_database() for name in ("sqlmesh", "ducklake", "shop")}
    with prod_environment(monkeypatch, build_prod_env(postgres_server, s3_env, tmp_path, dbs)):
        yield dict(os.environ)


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


def test_two_first_runs_on_a_fresh_ducklake_deployment(
    prod_env: dict[str, str], tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """No environment yet: both runs want to create it (``ensure_environment``); neither fails.

    Unserialized, both applied the plan at once and DuckLake refused one of each pair of
    ``CREATE TABLE`` for the same physical table ("Transaction conflict … has been created by
    another transaction already"). The plan lock on the state database lets exactly one create it.
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
    # the plan lock: exactly one run created the environment, the other found it
    creators = sum(child.seen("does not exist: creating it") for child in children)
    assert creators == (0 if create_environment_first else 1)

    from pipelines.platform.warehouse import connect

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


# --------------------------------------------------------------------------------- plan lock
# A small project whose SQLMesh state lives in the test PostgreSQL and no lock file (as in prod):
# a second session holds the plan lock, and PostgreSQL's pg_locks shows when the bridge waits.

PG_STATE_CONFIG = """\
gateways:
  pg_state:
    connection:
      type: duckdb
      database: {warehouse}
    state_connection:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      password: "{{{{ env_var('PLAN_LOCK_TEST_PG_PASSWORD') }}}}"
      database: {database}
default_gateway: pg_state
model_defaults:
  dialect: duckdb
  start: '2026-01-01'
  cron: '@daily'
"""


class ListLog:
    """Stands in for ``context.log``: keeps every message (list appends are thread-safe)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = error = info

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


class PlanLockProject:
    def __init__(self, root: Path, server: PostgresServer) -> None:
        self.server = server
        self.resource_root = root
        self.database = server.create_database()
        project_dir = write_project(root, summary=False)
        (project_dir / "config.yaml").write_text(
            PG_STATE_CONFIG.format(
                warehouse=root / "db" / "warehouse.duckdb",
                host=server.host,
                port=server.port,
                user=server.user,
                database=self.database,
            )
        )
        self.resource = SQLMeshResource(project_dir=str(project_dir))  # no lock file: prod

    def hold_lock(self, key: int = PLAN_LOCK_KEY) -> Any:
        """Another session holding the plan lock (a plan in flight); closing it releases the lock."""
        con = self.server.connect(self.database)
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        return con

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        con = self.server.connect(self.database)
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(query)
                return cur.fetchall() if cur.description else []
        finally:
            con.close()

    def waiters(self, key: int = PLAN_LOCK_KEY) -> int:
        """Sessions waiting for the plan lock (or ``key``) in this database right now."""
        # a bigint advisory key shows as classid (high 32 bits), objid (low 32 bits), objsubid 1
        return int(
            self.sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                f"AND classid = {key >> 32} AND objid = {key & 0xFFFFFFFF} "
                "AND objsubid = 1"
            )[0][0]
        )

    def environment(self) -> Any:
        """SQLMesh's ``prod`` environment, read from its state (None when it does not exist)."""
        from sqlmesh.core.config.connection import PostgresConnectionConfig
        from sqlmesh.core.state_sync import EngineAdapterStateSync

        if self.sql("SELECT to_regclass('sqlmesh._environments')")[0][0] is None:
            return None  # no SQLMesh context has opened this state yet

        config = PostgresConnectionConfig(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password,
            database=self.database,
        )
        adapter = config.create_engine_adapter()
        try:
            return EngineAdapterStateSync(adapter, schema="sqlmesh").get_environment("prod")
        finally:
            adapter.close()

    def ensure_environment(self, log: ListLog) -> None:
        """What every run does first (``SQLMeshResource.run``)."""
        ctx = self.resource.context()
        try:
            self.resource.ensure_environment(ctx, log)
        finally:
            ctx.close()


@pytest.fixture
def plan_lock_project(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> PlanLockProject:
    monkeypatch.setenv("PLAN_LOCK_TEST_PG_PASSWORD", postgres_server.password)
    return PlanLockProject(tmp_path, postgres_server)


class Worker(threading.Thread):
    """Runs ``target`` in a thread; keeps its error and when it finished (``time.time()``)."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = target
        self.error: BaseException | None = None
        self.finished = 0.0

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.finished = time.time()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll for an event (synchronization only: the assertions come after)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def start_waiting_for_the_lock(project: PlanLockProject, target: Callable[[], Any]) -> Worker:
    """Start ``target`` while another session holds the plan lock; return once it waits on it."""
    worker = Worker(target)
    worker.start()
    wait_until(lambda: project.waiters() == 1 or not worker.is_alive(), "it waits for the plan lock")
    assert worker.is_alive(), worker.error
    return worker


@pytest.mark.parametrize("operation", ["ensure_environment", "apply_plan"])
def test_plan_lock_serializes_environment_creation(
    plan_lock_project: PlanLockProject, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """While another session holds the plan lock, creating the environment waits; it runs after."""
    project = plan_lock_project
    monkeypatch.setattr(bridge_locks, "_POLL", "100ms")  # go round the wait loop
    log = ListLog()
    if operation == "ensure_environment":
        target: Callable[[], Any] = lambda: project.ensure_environment(log)  # noqa: E731
    else:
        target = lambda: project.resource.apply_plan(log)  # noqa: E731
    holder = project.hold_lock()
    try:
        worker = start_waiting_for_the_lock(project, target)
        wait_until(lambda: log.saw("still waiting") or not worker.is_alive(), "it logs that it waits")
        assert worker.is_alive(), worker.error
        assert log.saw("another process is applying a SQLMesh plan")
        assert project.environment() is None  # nothing was applied while the lock was held
        released = time.time()
    finally:
        holder.close()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.error is None, worker.error
    env = project.environment()
    assert env is not None and env.finalized_ts is not None
    assert released * 1000 <= env.finalized_ts and released <= worker.finished
    assert log.saw("got the SQLMesh plan lock")


def test_the_first_read_of_a_fresh_state_is_serialized(plan_lock_project: PlanLockProject) -> None:
    """SQLMesh creates its state tables on the first read of an empty state; two first runs
    doing so at once failed one ("current transaction is aborted"). The state setup lock makes
    the second wait, and it never waits for a plan (its own key)."""
    project = plan_lock_project
    log = ListLog()
    plan_holder = project.hold_lock()  # a plan in flight does not delay opening the state
    try:
        ctx = project.resource.context()
        ctx.close()
    finally:
        plan_holder.close()
    assert project.sql("SELECT to_regclass('sqlmesh._versions')")[0][0] is not None

    fresh = PlanLockProject(project.resource_root / "fresh", project.server)
    holder = fresh.hold_lock(STATE_INIT_LOCK_KEY)
    try:
        worker = Worker(lambda: fresh.ensure_environment(log))
        worker.start()
        wait_until(
            lambda: fresh.waiters(STATE_INIT_LOCK_KEY) == 1 or not worker.is_alive(),
            "it waits for the state setup lock",
        )
        assert worker.is_alive(), worker.error
        assert fresh.sql("SELECT to_regclass('sqlmesh._versions')")[0][0] is None  # nothing created
    finally:
        holder.close()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.error is None, worker.error
    env = fresh.environment()
    assert env is not None and env.finalized_ts is not None


def test_a_run_that_waited_uses_the_environment_created_meanwhile(plan_lock_project: PlanLockProject) -> None:
    """The environment is read again once the lock is held: the waiter does not apply a plan too."""
    project = plan_lock_project
    log = ListLog()
    holder = project.hold_lock()
    try:
        worker = start_waiting_for_the_lock(project, lambda: project.ensure_environment(log))
        # the lock holder creates the environment (as the first of two first runs does)
        ctx = project.resource.context()
        try:
            ctx.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True)
        finally:
            ctx.close()
        created = project.environment()
    finally:
        holder.close()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.error is None, worker.error
    assert not log.saw("does not exist: creating it")
    assert project.environment() == created


def test_an_environment_a_dead_plan_left_unfinished_is_repaired(plan_lock_project: PlanLockProject) -> None:
    """No lock file (prod): holding the plan lock proves no plan is in flight, so a run repairs it."""
    project = plan_lock_project
    project.ensure_environment(ListLog())
    project.sql("UPDATE sqlmesh._environments SET finalized_ts = NULL WHERE name = 'prod'")
    assert project.environment().finalized_ts is None
    log = ListLog()
    project.ensure_environment(log)
    assert log.saw("left unfinished by a dead run")
    assert project.environment().finalized_ts is not None


def test_an_environment_a_plan_in_flight_left_unfinished_is_left_to_it(
    plan_lock_project: PlanLockProject,
) -> None:
    """Unfinished while another session holds the lock: the run waits for that plan, repairs nothing."""
    project = plan_lock_project
    project.ensure_environment(ListLog())
    finalized = project.environment().finalized_ts
    project.sql("UPDATE sqlmesh._environments SET finalized_ts = NULL WHERE name = 'prod'")
    log = ListLog()
    holder = project.hold_lock()
    try:
        worker = start_waiting_for_the_lock(project, lambda: project.ensure_environment(log))
        # the plan in flight finishes
        project.sql(f"UPDATE sqlmesh._environments SET finalized_ts = {finalized} WHERE name = 'prod'")
    finally:
        holder.close()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.error is None, worker.error
    assert not log.saw("left unfinished")
    assert project.environment().finalized_ts == finalized


def test_the_pull_request_plan_check_applies_under_the_plan_lock(plan_lock_project: PlanLockProject) -> None:
    """CI's plan check writes the shared state (its branch environment): it waits while the
    ``sqlmesh_plan`` job (or a run creating prod) holds the plan lock, then applies."""
    from pipelines.ops.plan_check import run_plan_check

    project = plan_lock_project
    project.ensure_environment(ListLog())
    model = Path(project.resource.project_dir) / "models" / "daily_totals.sql"
    model.write_text(model.read_text().replace("count(*)::BIGINT AS n", "count(*)::BIGINT AS n, 1 AS v"))
    day = (date.today() - timedelta(days=2)).isoformat()
    holder = project.hold_lock()
    try:
        worker = Worker(
            lambda: run_plan_check(Path(project.resource.project_dir), None, "feature/v", day, day)
        )
        worker.start()
        wait_until(
            lambda: project.waiters() == 1 or not worker.is_alive(), "the check waits for the plan lock"
        )
        assert worker.is_alive(), worker.error
        assert project.sql("SELECT count(*) FROM sqlmesh._environments WHERE name = 'feature_v'")[0][0] == 0
    finally:
        holder.close()
    worker.join(timeout=180)
    assert not worker.is_alive() and worker.error is None, worker.error


def test_a_failed_re_apply_fails_the_run_and_leaves_the_environment_unfinalized(
    plan_lock_project: PlanLockProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-applying the plan a dead run left unfinished fails (a fault injected into SQLMesh's
    ``Context.plan``): the run fails saying so, and the environment is not declared finished."""
    from sqlmesh import Context

    project = plan_lock_project
    project.ensure_environment(ListLog())
    project.sql("UPDATE sqlmesh._environments SET finalized_ts = NULL WHERE name = 'prod'")

    def failing_plan(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected: the warehouse went away mid-apply")

    stock = Context.plan
    monkeypatch.setattr(Context, "plan", failing_plan)
    log = ListLog()
    with pytest.raises(dg.Failure) as failure:
        project.ensure_environment(log)
    assert "stays unfinalized" in str(failure.value.description)
    assert "injected: the warehouse went away" in str(failure.value.description)
    assert log.saw("left unfinished by a dead run")
    assert project.environment().finalized_ts is None
    monkeypatch.setattr(Context, "plan", stock)  # the cause is fixed: the next run repairs it
    project.ensure_environment(ListLog())
    assert project.environment().finalized_ts is not None
