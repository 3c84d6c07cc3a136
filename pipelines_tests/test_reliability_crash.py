"""kill -9 in the middle of a run, run again: the result equals an undisturbed run.

Each trial runs the pipeline (ingestion + every SQLMesh model) for a day in a subprocess
through ``pipelines.ops.cli.run_range`` — what ``pipelines demo`` does — on an embedded-default
deployment in a temp dir whose ``dagster.yaml`` has the repo's pools. A seeded trigger kills it
during ingestion or during the SQLMesh step. Then the trial checks what a reader would see:

* every visible raw/quarantine file is complete and equal to the undisturbed run's bytes;
  partition folders hold nothing else (hidden temp files are listed: readers skip them);
* every interval SQLMesh's state marks as done has its rows in the table;

and runs the same range again to completion, which must end byte-identical (raw Parquet) and
checksum-identical (every SQLMesh table) to the undisturbed run, with exactly the range's
intervals. Two trials run by default, twelve with ``-m slow``.

The undisturbed run is the first-ever run of a single day on a fresh deployment (it once
failed: DuckDB 1.5.5's ``max(ds)`` over a single hive partition), repeated three times to prove
idempotency.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
START = END = "2026-03-02"
NEXT_DAY = "2026-03-03"
DAYS = [START]
# ingestion and every SQLMesh model; "nochecks:" leaves out the asset checks (see RUNNER)
SELECTION = "nochecks:group:raw or group:staging or group:intermediate or group:marts"
SEED = 20261127
DEFAULT_TRIALS = 2
SLOW_TRIALS = 12
RUN_TIMEOUT = 300.0
STALE_SLOT_PATIENCE = 20.0

# The repo's dagster.yaml pools (one slot per pool, op granularity), with storage in the temp home.
DAGSTER_YAML = """\
concurrency:
  pools:
    default_limit: 1
    granularity: op
telemetry:
  enabled: false
"""

RUNNER = """\
import json, sys
from pipelines.ops.cli import run_range
start, end, selection, repeat, out = sys.argv[1:6]


snapshots = []
for _ in range(int(repeat)):
    if selection.startswith("nochecks:"):
        ok = run_range(start, end, selection[len("nochecks:"):], include_checks=False)
    else:
        ok = run_range(start, end, selection)
    if not ok:
        sys.exit(1)
    if out:
        from pipelines_tests.test_reliability_crash import snapshot
        from pipelines.platform.settings import Settings
        settings = Settings.from_env()
        snapshots.append(snapshot(settings.data_dir, settings.lake_uri))
if out:
    open(out, "w").write(json.dumps(snapshots))
print("RUNNER DONE", flush=True)
"""

# ---------------------------------------------------------------------------------- snapshots


def raw_files(lake_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under raw/ and quarantine/, hidden ones included, by relative path."""
    root = Path(lake_dir)
    out = {}
    for zone in ("raw", "quarantine"):
        for path in sorted((root / zone).rglob("*")):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def table_checksums(data_dir: str | Path) -> dict[str, list[Any]]:
    """Row count and an order-independent digest of every SQLMesh table (doubles rounded)."""
    con = duckdb.connect(str(Path(data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('staging', 'intermediate', 'marts') ORDER BY 1, 2"
        ).fetchall()
        out: dict[str, list[Any]] = {}
        for schema, table in tables:
            columns = con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall()
            parts = []
            for name, type_, *_ in columns:
                expr = f'"{name}"'
                if type_ in ("DOUBLE", "FLOAT") or type_.startswith("DECIMAL"):
                    expr = f"round({expr}, 6)"
                parts.append(f"coalesce(CAST({expr} AS VARCHAR), '<null>')")
            row = "concat_ws('|', " + ", ".join(parts) + ")"
            count, digest = con.execute(
                f"SELECT count(*), md5(coalesce(string_agg({row}, chr(10) ORDER BY {row}), '')) "
                f'FROM "{schema}"."{table}"'
            ).fetchone()  # type: ignore[misc]
            out[f"{schema}.{table}"] = [count, digest]
        return out
    finally:
        con.close()


def snapshot(data_dir: str | Path, lake_dir: str | Path) -> dict[str, Any]:
    return {"raw": raw_files(lake_dir), "tables": table_checksums(data_dir)}


def processed_days(data_dir: Path) -> dict[str, list[str]]:
    """Per incremental model (``schema.table``): the days SQLMesh's prod state marks as done."""
    from sqlmesh.core.config.connection import DuckDBConnectionConfig
    from sqlmesh.core.state_sync import EngineAdapterStateSync

    adapter = DuckDBConnectionConfig(database=str(data_dir / "sqlmesh_state.duckdb")).create_engine_adapter()
    try:
        state = EngineAdapterStateSync(adapter, schema="sqlmesh")
        env = state.get_environment("prod")
        if env is None:
            return {}
        out: dict[str, list[str]] = {}
        for snap in state.get_snapshots(env.snapshots).values():
            if not (snap.is_model and snap.model.kind.is_incremental_by_time_range):
                continue
            days = []
            for start_ms, end_ms in snap.intervals:
                day = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date()
                while _ms(day) < end_ms:
                    days.append(day.isoformat())
                    day += timedelta(days=1)
            out[".".join(p.strip('"') for p in snap.name.split(".")[-2:])] = days
        return out
    finally:
        adapter.close()


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


TIME_COLUMNS = {
    "staging.stg_orders": "order_date",
    "staging.stg_order_items": "order_date",
    "staging.stg_fx_rates": "rate_date",
    "staging.stg_web_events": "event_date",
    "intermediate.int_order_lines": "order_date",
    "marts.fct_orders": "order_date",
    "marts.daily_revenue": "order_date",
    "marts.category_sales": "order_date",
    "marts.web_funnel": "event_date",
}


def days_marked_done_without_rows(data_dir: Path) -> list[str]:
    """Intervals the state says are done whose day has no rows (every demo day has rows)."""
    done = processed_days(data_dir)
    if not done:
        return []
    assert set(done) == set(TIME_COLUMNS), sorted(done)
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        missing = []
        for model, days in done.items():
            column = TIME_COLUMNS[model]
            for day in days:
                count = con.execute(
                    f'SELECT count(*) FROM {model} WHERE CAST("{column}" AS DATE) = ?::DATE', [day]
                ).fetchone()[0]  # type: ignore[index]
                if count == 0:
                    missing.append(f"{model} {day}")
        return missing
    finally:
        con.close()


# ---------------------------------------------------------------------------------- processes


def prepare_home(root: Path) -> dict[str, str]:
    """An embedded-default deployment under ``root``; returns the subprocess environment."""
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    (root / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "SQLMESH_", "DAGSTER_"))}
    # each subprocess would otherwise compile dagster and sqlmesh from source again (~10 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        DAGSTER_HOME=str(root / "dagster"),
        PIPELINES_ENV="local",
        PIPELINES_DATA_DIR=str(root / "data"),
        PIPELINES_LAKE_URI=str(root / "lake"),
        PIPELINES_DEMO_SEED="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Child:
    """A run subprocess whose merged output is drained by a thread (so it never blocks)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def seen(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def tail(self, chars: int = 4000) -> str:
        return "".join(self.lines)[-chars:]

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def start_run(
    env: dict[str, str],
    repeat: int = 1,
    snapshots_out: Path | None = None,
    start: str = START,
    end: str = END,
    selection: str = SELECTION,
) -> Child:
    """``pipelines.ops.cli.run_range(start, end, selection)`` in a subprocess, ``repeat`` times."""
    args = [sys.executable, "-c", RUNNER, start, end, selection, str(repeat), str(snapshots_out or "")]
    proc = subprocess.Popen(
        args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Child(proc)


@dataclass(frozen=True)
class Trial:
    number: int
    phase: str  # "ingestion" | "sqlmesh"
    delay: float

    @property
    def trigger(self) -> str:
        # the first ingestion partition landed / the SQLMesh step started loading its context
        return ": read " if self.phase == "ingestion" else "load SQLMesh context"


def make_trial(number: int) -> Trial:
    rng = random.Random(SEED + number)
    phase = "ingestion" if number % 2 == 0 else "sqlmesh"
    delay = rng.uniform(0.0, 2.5) if phase == "ingestion" else rng.uniform(0.0, 5.0)
    return Trial(number, phase, round(delay, 3))


def kill_during(child: Child, trial: Trial) -> bool:
    """SIGKILL the run ``trial.delay`` seconds after its trigger line; False if it ended first."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not child.seen(trial.trigger):
        if child.proc.poll() is not None:
            raise AssertionError(f"run ended before {trial.trigger!r}:\n{child.tail()}")
        if time.monotonic() > deadline:
            child.proc.kill()
            raise AssertionError(f"no {trial.trigger!r} within {RUN_TIMEOUT}s:\n{child.tail()}")
        time.sleep(0.02)
    time.sleep(trial.delay)
    if child.proc.poll() is not None:
        return False
    os.kill(child.proc.pid, signal.SIGKILL)
    child.wait(timeout=30)
    return True


def run_to_completion(env: dict[str, str], dead_runs: set[str]) -> float:
    """Run again; fail fast if it waits on a pool slot still claimed by a killed run."""
    import dagster as dg

    child = start_run(env)
    waiting_since: float | None = None
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while child.proc.poll() is None:
            if time.monotonic() - child.started > RUN_TIMEOUT:
                child.proc.kill()
                raise AssertionError(f"re-run did not finish in {RUN_TIMEOUT}s:\n{child.tail()}")
            stale = stale_claims(instance, dead_runs)
            waiting = stale and _has_pending(instance, stale)
            waiting_since = (waiting_since or time.monotonic()) if waiting else None
            if waiting_since and time.monotonic() - waiting_since > STALE_SLOT_PATIENCE:
                child.proc.kill()
                child.wait(timeout=30)
                raise AssertionError(
                    "the re-run waits forever for a pool slot that the killed run still claims "
                    f"({stale}); a run killed with SIGKILL never frees its slots. Output:\n{child.tail(1500)}"
                )
            time.sleep(1.0)
    code = child.wait(timeout=30)
    assert code == 0 and child.seen("RUNNER DONE"), child.tail()
    return time.monotonic() - child.started


def stale_claims(instance: Any, dead_runs: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pool in instance.event_log_storage.get_concurrency_keys():
        info = instance.event_log_storage.get_concurrency_info(pool)
        held = [f"{s.run_id[:8]}:{s.step_key}" for s in info.claimed_slots if s.run_id in dead_runs]
        if held:
            out[pool] = held
    return out


def _has_pending(instance: Any, stale: dict[str, list[str]]) -> bool:
    """Some step waits (unassigned) in a pool whose slot a dead run holds."""
    return any(instance.event_log_storage.get_concurrency_info(pool).pending_run_ids for pool in stale)


def unfinished_runs(home: str) -> set[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(home) as instance:
        return {
            r.run_id
            for r in instance.get_runs()
            if r.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING)
        }


# ---------------------------------------------------------------------------------- checks


def visible_state_problems(lake_dir: Path, baseline: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems, hidden leftovers) of the raw and quarantine zones after a crash."""
    problems, hidden = [], []
    for rel, digest in raw_files(lake_dir).items():
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("."):
            hidden.append(rel)
            continue
        if name not in ("data.parquet", "rejected.jsonl"):
            problems.append(f"unexpected file {rel}")
        elif digest != baseline.get(rel):
            problems.append(f"{rel} differs from the undisturbed run (partial or different)")
        elif name == "data.parquet":
            duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake_dir / rel}')").fetchone()
    return problems, hidden


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The undisturbed run, repeated three times in one process (idempotency); the first is the reference."""
    root = tmp_path_factory.mktemp("baseline")
    env = prepare_home(root)
    out = root / "snapshots.json"
    child = start_run(env, repeat=3, snapshots_out=out)
    code = child.wait(timeout=3 * RUN_TIMEOUT)
    assert code == 0, child.tail()
    snapshots = json.loads(out.read_text())
    return {
        "snapshots": snapshots,
        "seconds": time.monotonic() - child.started,
        "days": processed_days(root / "data"),
    }


def test_same_range_three_times_is_byte_identical(baseline: dict[str, Any]) -> None:
    first, second, third = baseline["snapshots"]
    assert first["raw"] and all(k.endswith(("data.parquet", "rejected.jsonl")) for k in first["raw"])
    assert len([k for k in first["raw"] if k.startswith("raw/")]) == 6 * len(DAYS)
    assert first["raw"] == second["raw"] == third["raw"]  # byte-identical Parquet
    assert first["tables"] == second["tables"] == third["tables"]
    revenue = first["tables"]["marts.daily_revenue"]
    assert revenue[0] == len(DAYS)
    assert baseline["days"] == {model: DAYS for model in TIME_COLUMNS}


def crash_trial(trial: Trial, root: Path, baseline: dict[str, Any]) -> None:
    reference = baseline["snapshots"][0]
    env = prepare_home(root)
    child = start_run(env)
    killed = kill_during(child, trial)
    problems, hidden = visible_state_problems(root / "lake", reference["raw"])
    assert not problems, problems
    if hidden:  # readers skip hidden files; they are reported, not a failure
        print(f"trial {trial}: hidden temp files left by the crash: {hidden}")
    data = root / "data"
    if (data / "warehouse.duckdb").exists():
        assert not days_marked_done_without_rows(data), "state marks intervals done that have no rows"

    dead = unfinished_runs(env["DAGSTER_HOME"])
    seconds = run_to_completion(env, dead)

    after = snapshot(data, root / "lake")
    visible_after = {k: v for k, v in after["raw"].items() if not k.rsplit("/", 1)[-1].startswith(".")}
    assert visible_after == reference["raw"], "raw zone differs from the undisturbed run"
    assert after["tables"] == reference["tables"], "SQLMesh tables differ from the undisturbed run"
    assert processed_days(data) == {model: DAYS for model in TIME_COLUMNS}
    assert not days_marked_done_without_rows(data)
    print(f"trial {trial}: killed={killed}, re-run {seconds:.1f}s, hidden leftovers {hidden}")


def _trials() -> Iterator[Any]:
    for number in range(SLOW_TRIALS):
        marks = [] if number < DEFAULT_TRIALS else [pytest.mark.slow]
        yield pytest.param(make_trial(number), marks=marks, id=f"trial{number}-{make_trial(number).phase}")


@pytest.mark.parametrize("trial", list(_trials()))
def test_kill_and_rerun_equals_an_undisturbed_run(
    trial: Trial, tmp_path: Path, baseline: dict[str, Any]
) -> None:
    crash_trial(trial, tmp_path, baseline)


# ---------------------------------------------------------------------------------- crash points


def _demo_resources(root: Path) -> tuple[Any, Any, Any, Any]:
    from pipelines.platform.resources import LakeResource
    from pipelines.shop.resources import DemoDataResource, RatesApiResource, ShopDatabaseResource

    return (
        LakeResource(uri=str(root / "lake")),
        ShopDatabaseResource(sqlite_path=str(root / "shop.sqlite")),
        RatesApiResource(),
        DemoDataResource(enabled=True),
    )


def test_demo_seeding_recovers_from_a_crash_between_its_two_landing_files(tmp_path: Path) -> None:
    """The demo drops each day's clickstream as two files; a crash after the first leaves one.

    ``DemoDataResource.prepare`` only writes when the landing folder is empty, so the re-run
    ingests half a day, and keeps doing so.
    """
    from pipelines.shop.ingestion import ingest_one
    from pipelines.shop.sources.contracts import CONTRACTS

    contract = CONTRACTS["web_events"]
    complete = ingest_one(contract, START, *_demo_resources(tmp_path / "complete"))
    crashed = tmp_path / "crashed"
    lake, shop, rates, demo_data = _demo_resources(crashed)
    first = sorted((tmp_path / "complete" / "lake" / "landing" / "web_events" / START).glob("*.jsonl"))[0]
    lake.get().put_file(first, f"landing/web_events/{START}/{first.name}")  # the state the crash left
    rerun = ingest_one(contract, START, lake, shop, rates, demo_data)
    assert rerun.rows_landed == complete.rows_landed, "events of the second file are lost for good"


def test_demo_seeding_recovers_from_a_crash_between_orders_and_order_items(tmp_path: Path) -> None:
    """The shop database gets orders, then order lines; a crash in between leaves orders only.

    ``seed_shop_database`` skips a day whose order count is complete, so its lines never come.
    """
    from pipelines.shop.ingestion import ingest_one
    from pipelines.shop.sources.contracts import CONTRACTS

    resources = _demo_resources(tmp_path)
    complete = ingest_one(CONTRACTS["order_items"], START, *resources)
    from pipelines.shop.sources.readers import attach_shop_database

    con = duckdb.connect()
    attach_shop_database(con, sqlite_path=str(tmp_path / "shop.sqlite"), read_only=False)
    con.execute(f"DELETE FROM shop.order_items WHERE order_ts >= '{START}' AND order_ts < '{NEXT_DAY}'")
    con.close()  # the state a crash after the orders insert leaves
    rerun = ingest_one(CONTRACTS["order_items"], START, *resources)
    assert rerun.rows_landed == complete.rows_landed > 0, "the day's order lines are lost for good"
