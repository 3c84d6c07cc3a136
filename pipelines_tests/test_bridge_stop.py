"""Stopping a run: SQLMesh stops within a bounded time, a second interrupt does not skip the
wait, and the log says what was left; locks cover parents read through VIEW and EMBEDDED models."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from dagster_sqlmesh_bridge.events import RecordingConsole, RunStopped
from dagster_sqlmesh_bridge.project import load_project
from dagster_sqlmesh_bridge.runner import SQLMeshThread
from pipelines_tests.test_reliability_concurrency import ListLog


class Batches:
    """A stand-in for ``Context.run`` (the fault to inject: a run still busy when the step is
    interrupted): it announces batches to the real console, as SQLMesh's scheduler does, and
    stops when the console refuses the next one."""

    def __init__(self, console: RecordingConsole, batches: int, seconds: float) -> None:
        self.console, self.batches, self.seconds = console, batches, seconds
        self.started = 0

    def run(self, *args: Any, **kwargs: Any) -> str:
        for _ in range(self.batches):
            try:
                self.console.start_snapshot_evaluation_progress(type("S", (), {"name": "m"})())
            except RunStopped:
                return "FAILURE"
            self.started += 1
            time.sleep(self.seconds)
        return "SUCCESS"


class TwiceInterrupted(SQLMeshThread):
    """``join`` raises once more while the step waits: the second interrupt."""

    interrupts = 1

    def join(self, timeout: float | None = None) -> None:
        if self.interrupts:
            self.interrupts -= 1
            raise KeyboardInterrupt("interrupted again")
        super().join(timeout)


def test_an_interrupted_run_stops_after_its_batch_even_when_interrupted_twice() -> None:
    console = RecordingConsole()
    fake = Batches(console, batches=50, seconds=0.3)
    runner = TwiceInterrupted(fake, "prod", ["m"], {})
    runner.start()
    time.sleep(0.1)
    log = ListLog()
    started = time.monotonic()
    assert runner.halt(console, log, timeout=30) is True
    assert time.monotonic() - started < 5  # the batch in flight, not the 50 of the run
    assert not runner.is_alive() and fake.started <= 2 and runner.status == "FAILURE"
    assert log.saw("interrupted again: still waiting for SQLMesh to stop")
    assert log.saw("unfinished: m")


def test_a_run_that_does_not_stop_in_time_says_so() -> None:
    console = RecordingConsole()
    gate = threading.Event()

    class Stuck:
        def run(self, *args: Any, **kwargs: Any) -> None:
            gate.wait(10)  # one batch that takes longer than the step may wait

    runner = SQLMeshThread(Stuck(), "prod", ["m"], {})
    runner.start()
    log = ListLog()
    started = time.monotonic()
    assert runner.halt(console, log, timeout=1) is False
    assert 1 <= time.monotonic() - started < 3
    assert log.saw("did not stop within 1s")
    gate.set()
    runner.join()


SHAPES = {
    "base.sql": "MODEL (name s.base, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), start '2026-01-01');\n"
    "SELECT @start_ds::DATE AS ds, 1 AS v",
    "base_view.sql": "MODEL (name s.base_view, kind VIEW);\nSELECT ds, v FROM s.base",
    "other.sql": "MODEL (name s.other, kind FULL);\nSELECT 1 AS w",
    "inlined.sql": "MODEL (name s.inlined, kind EMBEDDED);\nSELECT w FROM s.other",
    "reader.sql": "MODEL (name s.reader, kind FULL);\nSELECT v, w FROM s.base_view CROSS JOIN s.inlined",
}


def test_locks_and_restatement_see_through_views_and_embedded_models(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "config.yaml").write_text(
        "gateways: {local: {connection: {type: duckdb, database: db.duckdb}}}\n"
        "default_gateway: local\nmodel_defaults: {dialect: duckdb}\n"
    )
    for name, sql in SHAPES.items():
        (tmp_path / "models" / name).write_text(sql)
    project = load_project(str(tmp_path))
    fqn = {m.table: m.fqn for m in project.models.values()}
    # a run writing the reader reads the view, the table behind it and what the embedded model reads
    reads = project.read_through([fqn["reader"]])
    assert {fqn["base_view"], fqn["base"], fqn["other"]} <= reads
    # a restatement of the base reaches the reader through the view
    assert project.downstream([fqn["base"]]) == {fqn["base_view"], fqn["reader"]}
    assert project.external_inputs(fqn["reader"]) == set()
