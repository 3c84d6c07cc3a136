"""The ``sqlmesh_plan`` job builds new versions under the per-model locks a run takes (real PostgreSQL state).

A plan that changes a model builds its new version over the days its previous version had, then
moves prod's view to it. A run of that model at the same moment holds the model's exclusive
advisory lock (``locks.model_locks``): the plan must wait for it, leaving prod on the old version
meanwhile, and build once the lock is free.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_sqlmesh_bridge.locks import model_lock_key
from pipelines_tests import test_reliability_concurrency as concurrency
from pipelines_tests.test_reliability_concurrency import ListLog, PlanLockProject, Worker, wait_until

plan_lock_project = concurrency.plan_lock_project  # the fixture: small project, PostgreSQL state

TOTALS = '"warehouse"."demo"."daily_totals"'  # the catalog of a DuckDB file is the file's name

# daily_totals with one more column: a change the plan applies and recomputes
CHANGED_TOTALS = """\
MODEL (
  name demo.daily_totals,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  audits (unique_values(columns := (ds)))
);
SELECT ds, sum(amount)::BIGINT AS total, count(*)::BIGINT AS n, max(amount)::BIGINT AS top
FROM demo.daily_source
WHERE ds BETWEEN @start_date AND @end_date
GROUP BY ds
"""


def totals_snapshot(project: PlanLockProject) -> Any:
    """SQLMesh's snapshot of daily_totals in the ``prod`` environment (from its state)."""
    from sqlmesh.core.config.connection import PostgresConnectionConfig
    from sqlmesh.core.state_sync import EngineAdapterStateSync

    config = PostgresConnectionConfig(
        host=project.server.host,
        port=project.server.port,
        user=project.server.user,
        password=project.server.password,
        database=project.database,
    )
    adapter = config.create_engine_adapter()
    try:
        state = EngineAdapterStateSync(adapter, schema="sqlmesh")
        env = state.get_environment("prod")
        info = next(s for s in env.snapshots if s.name == TOTALS)
        return state.get_snapshots([info.snapshot_id])[info.snapshot_id]
    finally:
        adapter.close()


def totals_intervals(project: PlanLockProject) -> list[tuple[int, int]]:
    """The intervals SQLMesh's state holds for the environment's daily_totals."""
    return list(totals_snapshot(project).intervals)


def totals_version(project: PlanLockProject) -> str:
    """The version (hence table) prod's daily_totals view points at."""
    return str(totals_snapshot(project).version)


def hold_model_lock(project: PlanLockProject, fqn: str) -> Any:
    """Another session holding ``fqn``'s exclusive lock, as a run of that model does."""
    con = project.server.connect(project.database)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (model_lock_key(fqn),))
    return con


def build_prod(project: PlanLockProject, start: str, end: str, execution_time: str) -> None:
    """Prod's environment with ``start``..``end`` built by a plain SQLMesh run."""
    project.ensure_environment(ListLog())
    ctx = project.resource.context()
    try:
        assert ctx.run("prod", start=start, end=end, execution_time=execution_time, ignore_cron=True)
        assert TOTALS in ctx.models  # the fqn runs lock
    finally:
        ctx.close()


def test_a_plan_recomputes_a_changed_model_only_when_no_run_holds_it(
    plan_lock_project: PlanLockProject,
) -> None:
    project = plan_lock_project
    build_prod(project, "2026-03-01", "2026-03-02", "2026-03-03")
    before = totals_intervals(project)
    assert before, "the first run computed daily_totals"
    old_version = totals_version(project)
    (Path(project.resource.project_dir) / "models" / "daily_totals.sql").write_text(CHANGED_TOTALS)

    log = ListLog()
    holder = hold_model_lock(project, TOTALS)  # a run of daily_totals in flight
    try:
        worker = Worker(lambda: project.resource.apply_plan(log))
        worker.start()
        wait_until(lambda: log.saw("another run holds the lock") or not worker.is_alive(), "the plan waits")
        assert worker.is_alive(), worker.error
        time.sleep(1.0)  # time in which an unlocked plan would have built two days
        # nothing applied, nothing built: prod still reads the old version with its days
        assert totals_version(project) == old_version, "the plan moved prod while a run held the model"
        assert totals_intervals(project) == before
        assert not log.saw("building demo.daily_totals over")
        released = time.time()
    finally:
        holder.close()
    worker.join(timeout=120)
    assert not worker.is_alive() and worker.error is None, worker.error
    assert log.saw("building demo.daily_totals over") and log.saw("got the lock of")
    assert totals_version(project) != old_version
    # built after the lock was free, then promoted: SQLMesh's plan builds the new version from
    # the model's start to where prod was, the days the old version had among them
    after = totals_intervals(project)
    assert len(after) == 1 and after[0][0] <= before[0][0] and after[0][1] == before[-1][1]
    assert worker.finished >= released


def test_a_day_a_racing_run_adds_is_in_the_new_version(
    plan_lock_project: PlanLockProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run of day 3 holds daily_totals' lock and is about to evaluate it (held there by
    an injected pause) when the plan starts. The plan reads the intervals to rebuild only once
    it holds the lock, after the run added day 3 to the old version: the new version has day 3
    too, and Dagster's record of day 3 is true of what prod reads."""
    import dagster as dg

    from dagster_sqlmesh_bridge import load_project, sqlmesh_assets
    from dagster_sqlmesh_bridge.events import RecordingConsole

    project = plan_lock_project
    build_prod(project, "2026-03-01", "2026-03-02", "2026-03-03")
    assert len(totals_intervals(project)) == 1  # one merged interval: days 1-2

    paused, go = threading.Event(), threading.Event()
    stock = RecordingConsole.start_snapshot_evaluation_progress

    def pause_once(self: Any, snapshot: Any, *args: Any, **kwargs: Any) -> None:
        if snapshot.name == TOTALS and not paused.is_set():
            paused.set()
            assert go.wait(timeout=120)
        stock(self, snapshot, *args, **kwargs)

    monkeypatch.setattr(RecordingConsole, "start_snapshot_evaluation_progress", pause_once)
    assets = sqlmesh_assets(load_project([project.resource.project_dir]), pool=None)
    keys = [dg.AssetKey(["demo", "daily_source"]), dg.AssetKey(["demo", "daily_totals"])]
    run = Worker(
        lambda: dg.materialize(
            [assets], selection=keys, partition_key="2026-03-03", resources={"sqlmesh": project.resource}
        )
    )
    run.start()
    wait_until(lambda: paused.is_set() or not run.is_alive(), "the run holds the lock, before day 3")
    assert run.is_alive(), run.error

    (Path(project.resource.project_dir) / "models" / "daily_totals.sql").write_text(CHANGED_TOTALS)
    log = ListLog()
    plan = Worker(lambda: project.resource.apply_plan(log))
    plan.start()
    try:
        wait_until(lambda: log.saw("another run holds the lock") or not plan.is_alive(), "the plan waits")
        assert plan.is_alive(), plan.error
    finally:
        go.set()
    run.join(timeout=120)
    plan.join(timeout=120)
    assert not run.is_alive() and run.error is None, run.error
    assert not plan.is_alive() and plan.error is None, plan.error
    day = 24 * 3600 * 1000
    # from the model's start (2026-01-01) through March 3, the day the racing run added
    assert totals_intervals(project) == [(1767225600000, 1772323200000 + 3 * day)]
    con = duckdb.connect(str(project.resource_root / "db" / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(f"SELECT ds::VARCHAR, n, top FROM {TOTALS} ORDER BY ds").fetchall()
    finally:
        con.close()
    # every day with the new column, the one the racing run added (March 3) among them
    assert rows[-3:] == [("2026-03-01", 3, 20), ("2026-03-02", 3, 20), ("2026-03-03", 3, 20)]
    assert len(rows) == 62 and {top for _, _, top in rows} == {20}
    assert log.saw("over [2026-01-01 00:00, 2026-03-04 00:00)"), log.lines


# a model the plan adds, reading the changed one
DAILY_TOP = """\
MODEL (
  name demo.daily_top,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds)
);
SELECT ds, top FROM demo.daily_totals WHERE ds BETWEEN @start_date AND @end_date
"""

READS = {
    "daily_totals": 'SELECT ds::VARCHAR, count(*), sum(hash(ds, total, n))::VARCHAR FROM "warehouse"."demo".'
    '"daily_totals" GROUP BY 1',
    "daily_top": 'SELECT ds::VARCHAR, count(*), sum(hash(ds, top))::VARCHAR FROM "warehouse"."demo".'
    '"daily_top" GROUP BY 1',
}


class Reader(threading.Thread):
    """Reads both marts through prod's views on a connection of its own, until told to stop:
    per read and mart, {day: [rows, checksum]}, or None while the mart does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.con = duckdb.connect(str(path))
        self.stopping = threading.Event()
        self.reads: list[dict[str, dict[str, list[Any]] | None]] = []

    def read(self) -> dict[str, dict[str, list[Any]] | None]:
        seen: dict[str, dict[str, list[Any]] | None] = {}
        for mart, sql in READS.items():
            try:
                seen[mart] = {d: [n, s] for d, n, s in self.con.execute(sql).fetchall()}
            except duckdb.CatalogException:
                seen[mart] = None
        return seen

    def run(self) -> None:
        while not self.stopping.is_set():
            self.reads.append(self.read())
            time.sleep(0.02)

    def stop(self) -> list[dict[str, dict[str, list[Any]] | None]]:
        self.stopping.set()
        self.join(timeout=60)
        self.reads.append(self.read())
        self.con.close()
        return self.reads


def test_readers_never_see_a_day_missing_while_a_plan_changes_a_model_and_adds_one(
    plan_lock_project: PlanLockProject,
) -> None:
    """A reader polls prod's marts during a plan that adds a column to daily_totals and adds
    daily_top: every read of daily_totals sees each of the three days with exactly its rows,
    and daily_top is either not there yet or there with all three days."""
    project = plan_lock_project
    build_prod(project, "2026-03-01", "2026-03-03", "2026-03-04")
    models = Path(project.resource.project_dir) / "models"
    (models / "daily_totals.sql").write_text(CHANGED_TOTALS)
    (models / "daily_top.sql").write_text(DAILY_TOP)
    reader = Reader(project.resource_root / "db" / "warehouse.duckdb")
    reference = reader.read()["daily_totals"]
    assert reference is not None and sorted(reference) == ["2026-03-01", "2026-03-02", "2026-03-03"]
    reader.start()
    log = ListLog()
    try:
        outcome = project.resource.apply_plan(log)
    finally:
        reads = reader.stop()
    assert {c.model for c in outcome.changes} >= {"demo.daily_totals", "demo.daily_top"}
    assert len(reads) >= 10, "the reader hardly read during the plan"
    # the plan also fills the days before March (SQLMesh builds from the model's start): a read
    # sees them all or none, and every day of the reference always with exactly its rows
    wrong = [
        r["daily_totals"] for r in reads if {d: r["daily_totals"].get(d) for d in reference} != reference
    ]
    assert not wrong, f"{len(wrong)} of {len(reads)} reads saw daily_totals differ: {wrong[:3]}"
    final = reads[-1]  # read once the plan returned
    totals = [r["daily_totals"] for r in reads]
    assert all(t == reference or t == final["daily_totals"] for t in totals), "a half-filled daily_totals"
    top = [r["daily_top"] for r in reads]
    partial = [t for t in top if t is not None and t != final["daily_top"]]
    assert not partial, f"daily_top was seen partly built: {partial[:3]}"
    assert top[0] is None and top[-1] is not None  # it appeared during the plan, whole
    assert all(t == top[-1] for t in top if t is not None)
