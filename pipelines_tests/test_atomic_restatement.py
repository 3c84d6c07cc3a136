"""Atomic restatement on the prod stack (DuckLake in PostgreSQL, data on S3).

A restating run deletes an interval's rows and inserts them again. The bridge runs SQLMesh with
one DuckDB transaction per evaluated batch (``sqlmesh_private.atomic_batches``), so DuckLake
commits both as one snapshot: a reader in another process never sees a day missing or doubled,
and a run killed between the DELETE and the INSERT leaves the previous rows in place.

Each run and the reader are real processes (as pods are), reading through the DuckLake catalog.
A runner in ``stock`` mode runs stock SQLMesh instead (autocommit): what the figures in
docs/reliability.md compare against.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines_tests import test_concurrency_overlap as overlap
from pipelines_tests.test_concurrency_overlap import (
    CHAIN,
    DAYS,
    TIMEOUT,
    Stack,
    StampedChild,
    evaluation_window,
)
from pipelines_tests.test_reliability_crash import REPO, Child, prepare_home

prod_stack = overlap.stack  # the fixture: raw data for DAYS ingested, environment created

# (table, time column): the staging model and the mart a web-chain run restates
WATCHED = (("staging.stg_web_events", "event_date"), ("marts.web_funnel", "event_date"))

# A ranged run of the web chain; with "kill" it kills itself (SIGKILL, no clean-up) when SQLMesh
# sends the INSERT that follows web_funnel's DELETE; with "stock" it runs stock SQLMesh.
RUNNER = """\
import os, signal, sys
from pipelines.ops.cli import run_range
start, end, selection, mode = sys.argv[1:5]
if "stock" in mode:
    import dagster_sqlmesh_bridge.sqlmesh_private as private
    private.PINNED_SQLMESH = "stock SQLMesh for the comparison"
if "kill" in mode:
    from sqlmesh.core.engine_adapter import DuckDBEngineAdapter
    execute, deleted = DuckDBEngineAdapter.execute, []
    def faulty(self, expressions, *args, **kwargs):
        sql = " ".join(str(e) for e in (expressions if isinstance(expressions, list) else [expressions]))
        if "web_funnel" in sql and sql.lstrip().upper().startswith("DELETE"):
            deleted.append(sql)
        if deleted and "web_funnel" in sql and sql.lstrip().upper().startswith("INSERT"):
            print("KILLED BETWEEN DELETE AND INSERT", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return execute(self, expressions, *args, **kwargs)
    DuckDBEngineAdapter.execute = faulty
ok = run_range(start, end, selection, include_checks=False)
print("RUNNER DONE" if ok else "RUNNER FAILED", flush=True)
sys.exit(0 if ok else 1)
"""

# Polls every watched table through its own DuckLake connection until the stop file appears:
# one JSON line per read, {table: {day: [rows, checksum]}} with its start and end time.
POLLER = """\
import json, sys, time
from pathlib import Path
from pipelines.platform.warehouse import connect
out, stop, watched = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = connect(read_only=True)
queries = {}
for table, column in watched:
    schema, name = table.split(".")
    cols = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = 'lake' "
        "AND table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, name]
    ).fetchall()
    exprs = [f'round("{c}", 6)' if t in ("DOUBLE", "FLOAT") else f'"{c}"' for c, t in cols]
    queries[table] = (
        f'SELECT "{column}"::VARCHAR, count(*), sum(hash({", ".join(exprs)})::HUGEINT)::VARCHAR '
        f"FROM {table} GROUP BY 1"
    )
print("POLLER READY", flush=True)
with open(out, "w") as f:
    while not Path(stop).exists():
        began = time.time()
        seen = {t: {d: [n, s] for d, n, s in con.execute(q).fetchall()} for t, q in queries.items()}
        f.write(json.dumps({"began": began, "ended": time.time(), "seen": seen}) + "\\n")
        f.flush()
"""


def start_runner(stack: Stack, start: str, end: str, mode: str = "") -> Child:
    stack.count += 1
    env = {**prepare_home(stack.root / f"run{stack.count}"), **stack.env}
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    args = [sys.executable, "-c", RUNNER, start, end, CHAIN, mode or "atomic"]
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return StampedChild(proc)


def run(stack: Stack, mode: str = "") -> Child:
    """A restating run of the web chain over every day; returns it finished."""
    child = start_runner(stack, DAYS[0], DAYS[-1], mode)
    code = child.wait(timeout=TIMEOUT)
    if "kill" not in mode:
        assert code == 0, child.tail(3000)
    return child


def per_day() -> dict[str, dict[str, list[Any]]]:
    """What a reader sees now: per watched table and day, [rows, checksum]."""
    from pipelines.platform.warehouse import connect

    con = connect(read_only=True)
    try:
        out: dict[str, dict[str, list[Any]]] = {}
        for table, column in WATCHED:
            cols = con.execute(f"DESCRIBE {table}").fetchall()
            exprs = ", ".join(
                f'round("{c[0]}", 6)' if c[1] in ("DOUBLE", "FLOAT") else f'"{c[0]}"' for c in cols
            )
            checksum = f"sum(hash({exprs})::HUGEINT)::VARCHAR"
            rows = con.execute(
                f'SELECT "{column}"::VARCHAR, count(*), {checksum} FROM {table} GROUP BY 1'
            ).fetchall()
            out[table] = {d: [n, s] for d, n, s in rows}
        return out
    finally:
        con.close()


class Poller:
    """The reader process: started before a run, stopped after it, its reads kept."""

    def __init__(self, root: Path, env: dict[str, str], name: str) -> None:
        self.out, self.stop = root / f"{name}.jsonl", root / f"{name}.stop"
        args = [sys.executable, "-c", POLLER, str(self.out), str(self.stop), json.dumps(WATCHED)]
        self.child = Child(
            subprocess.Popen(
                args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
        deadline = time.monotonic() + 120
        while not self.child.seen("POLLER READY"):
            assert self.child.proc.poll() is None and time.monotonic() < deadline, self.child.tail()
            time.sleep(0.05)

    def reads(self) -> list[dict[str, Any]]:
        self.stop.touch()
        assert self.child.wait(timeout=60) == 0, self.child.tail()
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def anomalies(reads: list[dict[str, Any]], reference: dict[str, dict[str, list[Any]]]) -> list[str]:
    """Every (read, table, day) whose rows differ from the reference: missing, doubled or other."""
    found = []
    for read in reads:
        for table, days in reference.items():
            seen = read["seen"][table]
            for day, (rows, checksum) in days.items():
                got = seen.get(day, [0, None])
                if got != [rows, checksum]:
                    found.append(f"{read['began']:.3f} {table} {day}: {got[0]} rows, expected {rows}")
    return found


def during(reads: list[dict[str, Any]], window: tuple[float, float]) -> list[dict[str, Any]]:
    """The reads that overlapped ``window`` (the run's locked evaluation)."""
    return [r for r in reads if r["ended"] >= window[0] and r["began"] <= window[1]]


def snapshots_since(snapshot: int) -> list[tuple[int, dict[str, list[str]]]]:
    from pipelines.platform.warehouse import connect

    con = connect(read_only=True)
    try:
        rows = con.execute(
            "SELECT snapshot_id, changes FROM ducklake_snapshots('lake') WHERE snapshot_id > ? "
            "ORDER BY snapshot_id",
            [snapshot],
        ).fetchall()
        return [(int(s), c) for s, c in rows]
    finally:
        con.close()


def table_ids(model: str) -> set[str]:
    """The DuckLake table ids of ``model``'s physical tables (``sqlmesh__marts.marts__web_funnel__…``)."""
    from pipelines.platform.warehouse import connect

    schema, name = model.split(".")
    con = connect(read_only=True)
    try:
        rows = con.execute(
            "SELECT table_id FROM ducklake_table_info('lake') WHERE starts_with(table_name, ?)",
            [f"{schema}__{name}__"],
        ).fetchall()
        return {str(r[0]) for r in rows}
    finally:
        con.close()


def last_snapshot() -> int:
    from pipelines.platform.warehouse import connect

    con = connect(read_only=True)
    try:
        return int(con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0])
    finally:
        con.close()


def funnel_snapshots(mark: int) -> list[list[str]]:
    """Per DuckLake snapshot after ``mark`` that changed web_funnel: what it did to it."""
    funnel = table_ids("marts.web_funnel")
    touched = [c for _, c in snapshots_since(mark) if any(funnel & set(v) for v in c.values())]
    return [sorted(k for k, v in c.items() if funnel & set(v)) for c in touched]


def poller_env(stack: Stack) -> dict[str, str]:
    return {**prepare_home(stack.root / "poller"), **stack.env}


def restate_while_polling(stack: Stack, trials: int, mode: str = "") -> tuple[list[str], list[int]]:
    """``trials`` restating runs while the reader polls; returns the reader's anomalies and, per
    run, how many reads overlapped its locked evaluation."""
    reference = per_day()
    poller = Poller(stack.root, poller_env(stack), f"poll-{stack.count}")
    windows = [evaluation_window(run(stack, mode)) for _ in range(trials)]
    reads = poller.reads()
    return anomalies(reads, reference), [len(during(reads, w)) for w in windows]


@pytest.mark.slow
def test_readers_never_see_a_restated_day_missing_or_doubled(prod_stack: Stack) -> None:
    """Two restating runs of days 1-3 while another process reads both tables through the
    DuckLake catalog: every read sees every day with exactly the reference rows. DuckLake shows
    why: each run committed web_funnel's restatement as one snapshot with its delete and insert."""
    run(prod_stack)  # the first computation: the reference every later read must see
    reference = per_day()
    assert all(len(reference[t]) == len(DAYS) for t, _ in WATCHED), reference
    mark = last_snapshot()
    found, overlapping = restate_while_polling(prod_stack, trials=2)
    kinds = funnel_snapshots(mark)
    print(f"atomic: {len(found)} anomalous reads, reads per run {overlapping}, snapshots {kinds}")
    assert found == [], found[:20]
    assert min(overlapping) >= 3, f"too few reads during the restatements: {overlapping}"
    # one batch (the three days) per run = one snapshot with both the delete and the insert
    assert kinds == [["tables_deleted_from", "tables_inserted_into"]] * 2, kinds


@pytest.mark.slow
def test_a_run_killed_between_delete_and_insert_keeps_the_previous_rows(prod_stack: Stack) -> None:
    run(prod_stack)
    reference = per_day()
    killed = run(prod_stack, "kill")
    assert killed.seen("KILLED BETWEEN DELETE AND INSERT") and killed.proc.returncode == -9, killed.tail()
    assert per_day() == reference  # the DELETE never committed: every day still has its rows
    run(prod_stack)  # the re-run recomputes (its locks are free: they died with the killed session)
    assert per_day() == reference


@pytest.mark.slow
def test_stock_sqlmesh_leaves_the_gap_these_tests_close(prod_stack: Stack) -> None:
    """The same reader, runs and fault with stock SQLMesh (autocommit), for the before/after
    figures in docs/reliability.md: two commits per restatement, and the kill leaves
    web_funnel without its days until a re-run."""
    run(prod_stack, "stock")
    reference = per_day()
    mark = last_snapshot()
    found, overlapping = restate_while_polling(prod_stack, trials=2, mode="stock")
    kinds = funnel_snapshots(mark)
    print(f"stock: {len(found)} anomalous reads, reads per run {overlapping}, snapshots {kinds}")
    assert kinds == [["tables_deleted_from"], ["tables_inserted_into"]] * 2, kinds
    killed = run(prod_stack, "stock kill")
    assert killed.seen("KILLED BETWEEN DELETE AND INSERT"), killed.tail()
    assert per_day()["marts.web_funnel"] == {}  # the DELETE committed alone: every day is gone
    run(prod_stack, "stock")
    assert per_day() == reference
