"""Overlapping runs on the prod stack (DuckLake in PostgreSQL, data on S3): no lost or doubled rows.

Each run is a real process (one per pod in prod), with its own Dagster home and no pools: only
the bridge's per-model advisory locks (``dagster_sqlmesh_bridge/locks.py``) stand between
them. The processes import everything first and then wait for one "go" file, so their SQLMesh
steps really start together. After every trial each model's table equals an undisturbed run of
the whole range (row count and an order-independent checksum), and every run succeeded (a
blocking audit such as ``web_funnel``'s ``unique_values`` fails its run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines.platform.settings import Settings
from pipelines_tests.conftest import RANGE_END, RANGE_START, Deployment
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.test_reliability_crash import REPO, Child, prepare_home

DAYS = ["2026-04-06", "2026-04-07", "2026-04-08"]
PROD_KEYS = ("PIPELINES_", "SQLMESH_", "SHOP_DB_", "AWS_")
STG = "key:staging/stg_web_events"
FUNNEL = "key:marts/web_funnel"
CHAIN = f"{STG} or {FUNNEL}"
FX = "key:staging/stg_fx_rates"
TABLES = ("staging.stg_web_events", "marts.web_funnel")
TIMEOUT = 600.0

# (selection, first day, last day): every run overlaps another one in models and days
TWO_RUNS = [(CHAIN, DAYS[0], DAYS[1]), (CHAIN, DAYS[1], DAYS[2])]
FOUR_RUNS = [*TWO_RUNS, (FUNNEL, DAYS[0], DAYS[2]), (STG, DAYS[1], DAYS[1])]

RUNNER = """\
import sys, time
from pathlib import Path
from pipelines.ops.cli import run_range
import pipelines.definitions, sqlmesh, sqlmesh.core.context  # imported before the start signal
start, end, selection, go = sys.argv[1:5]
print("RUNNER READY", flush=True)
while not Path(go).exists():
    time.sleep(0.005)
ok = run_range(start, end, selection, include_checks=False)
print("RUNNER DONE" if ok else "RUNNER FAILED", flush=True)
sys.exit(0 if ok else 1)
"""


class StampedChild(Child):
    """A run subprocess whose output lines are prefixed with the wall-clock time they arrived."""

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(f"{time.time():.3f} {line}")


def start_runner(env: dict[str, str], selection: str, start: str, end: str, go: Path) -> Child:
    args = [sys.executable, "-c", RUNNER, start, end, selection, str(go)]
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return StampedChild(proc)


def checksums() -> dict[str, tuple[int, Any]]:
    """Per table: row count and a sum of row hashes (doubles rounded), independent of row order."""
    from pipelines.platform.warehouse import connect

    con = connect(read_only=True)
    try:
        out = {}
        for table in TABLES:
            schema, name = table.split(".")
            cols = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = 'lake' AND table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [schema, name],
            ).fetchall()
            exprs = [f'round("{c}", 6)' if t in ("DOUBLE", "FLOAT") else f'"{c}"' for c, t in cols]
            row = con.execute(
                f"SELECT count(*), sum(hash({', '.join(exprs)})::HUGEINT) FROM {table}"
            ).fetchone()
            out[table] = (int(row[0]), int(row[1] or 0))
        return out
    finally:
        con.close()


class Stack:
    """The prod deployment of one test: raw data for ``DAYS`` ingested, environment created."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.count = 0

    def run_together(self, runs: list[tuple[str, str, str]]) -> list[Child]:
        """Start ``runs`` as processes, release them at once, wait; returns the finished children."""
        self.count += 1
        go = self.root / f"go-{self.count}"
        children = []
        for i, (selection, start, end) in enumerate(runs):
            env = {**prepare_home(self.root / f"trial{self.count}-run{i}"), **self.env}
            (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            children.append(start_runner(env, selection, start, end, go))
        deadline = time.monotonic() + TIMEOUT
        while not all(c.seen("RUNNER READY") for c in children):
            assert time.monotonic() < deadline and all(c.proc.poll() is None for c in children), "\n".join(
                c.tail() for c in children
            )
            time.sleep(0.05)
        go.touch()
        codes = [c.wait(timeout=TIMEOUT) for c in children]
        assert codes == [0] * len(children), "\n".join(c.tail(3000) for c in children)
        return children


@pytest.fixture
def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[Stack]:
    dbs = {name: postgres_server.create_database() for name in ("sqlmesh", "ducklake", "shop")}
    with prod_environment(monkeypatch, build_prod_env(postgres_server, s3_env, tmp_path, dbs)):
        (tmp_path / "setup").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "setup")) as instance:
            defs = Deployment(tmp_path, Settings.from_env(), instance).definitions()
            job = dg.define_asset_job("ingest", selection="key:raw/web_events or key:raw/fx_rates")
            defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
            tags = {RANGE_START: DAYS[0], RANGE_END: DAYS[-1]}
            assert defs.resolve_job_def("ingest").execute_in_process(instance=instance, tags=tags).success
            assert defs.resolve_job_def("sqlmesh_plan").execute_in_process(instance=instance).success
        env = {k: v for k, v in os.environ.items() if k.startswith(PROD_KEYS)}
        yield Stack(tmp_path, env)


def overlapping_trials(stack: Stack, runs: list[tuple[str, str, str]], trials: int) -> None:
    stack.run_together([(CHAIN, DAYS[0], DAYS[-1])])  # the undisturbed reference
    reference = checksums()
    assert reference["marts.web_funnel"][0] == len(DAYS)
    waited = 0
    for trial in range(trials):
        children = stack.run_together(runs)
        waited += sum(c.seen("waiting for it") for c in children)
        assert checksums() == reference, f"trial {trial}"
    assert waited >= trials, "the runs never met at a model lock: they did not overlap"


def test_two_overlapping_runs_equal_an_undisturbed_run(stack: Stack) -> None:
    """The default-suite version (about 2-3 minutes on 2 shared cores): 2 runs x 2 trials, then
    two runs of different models stay concurrent (one stack, one setup)."""
    overlapping_trials(stack, TWO_RUNS, trials=2)
    runs_of_different_models_overlap(stack)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 20 trials: about 5 min idle, 12 min at load average 13
def test_two_then_four_overlapping_runs_ten_trials_each(stack: Stack) -> None:
    overlapping_trials(stack, TWO_RUNS, trials=10)
    overlapping_trials(stack, FOUR_RUNS, trials=10)


def evaluation_window(child: Child) -> tuple[float, float]:
    """When the run held its model locks: from the lock wait's end to the end of ``sqlmesh run``
    (the bridge's stage timer logs each stage's duration when it ends; the runner stamps lines)."""
    got = run_end = None
    for line in child.lines:
        stamp, _, text = line.partition(" ")
        if "wait for model locks:" in text:
            got = float(stamp)
        if "sqlmesh run of" in text and text.rstrip().endswith("s"):
            run_end = float(stamp)
    assert got is not None and run_end is not None, child.tail()
    return got, run_end


def runs_of_different_models_overlap(stack: Stack) -> None:
    children = stack.run_together([(CHAIN, DAYS[0], DAYS[1]), (FX, DAYS[0], DAYS[1])])
    assert not any(c.seen("waiting for it") for c in children), "\n".join(c.tail() for c in children)
    (a0, a1), (b0, b1) = (evaluation_window(c) for c in children)
    overlap = min(a1, b1) - max(a0, b0)
    print(f"evaluation windows {a1 - a0:.2f}s and {b1 - b0:.2f}s overlap by {overlap:.2f}s")
    assert overlap > 0, ((a0, a1), (b0, b1))
