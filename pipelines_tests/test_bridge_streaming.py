"""Results stream out of a SQLMesh run: a model is recorded as soon as SQLMesh finished it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import dagster as dg
import pytest

from pipelines_tests.conftest import RANGE_END, RANGE_START, Deployment, materialized_keys
from pipelines_tests.sqlmesh_projects import write_project

SOURCE, SLOW = dg.AssetKey(["demo", "daily_source"]), dg.AssetKey(["demo", "slow"])

# a downstream model that takes as long as BRIDGE_TEST_SLEEP says (only the first run sets it)
SLOW_MODEL = """\
import os
import time
from typing import Any
import typing as t

import pandas as pd
from sqlmesh import ExecutionContext, model
from sqlmesh.core.model.kind import ModelKindName


@model(
    "demo.slow",
    kind={"name": ModelKindName.INCREMENTAL_BY_TIME_RANGE, "time_column": "ds"},
    columns={"ds": "date", "n": "bigint"},
)
def execute(context: ExecutionContext, start, end, **kwargs: t.Any) -> pd.DataFrame:
    time.sleep(float(os.environ.get("BRIDGE_TEST_SLEEP", "0")))
    table = context.resolve_table("demo.daily_source")
    return context.fetchdf(
        f"SELECT ds, count(*)::BIGINT AS n FROM {table} "
        f"WHERE ds BETWEEN '{start:%Y-%m-%d}' AND '{end:%Y-%m-%d}' GROUP BY ds"
    )
"""

RUN = """\
import dagster as dg
from pipelines.definitions import build_definitions

defs = build_definitions()
keys = [dg.AssetKey(["demo", "daily_source"]), dg.AssetKey(["demo", "slow"])]
job = dg.define_asset_job("streamed", selection=keys)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("streamed")
with dg.DagsterInstance.get() as instance:
    job_def.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-03-01",
            "dagster/asset_partition_range_end": "2026-03-01",
        },
    )
"""


def test_upstream_is_recorded_while_downstream_runs_and_survives_kill_9(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_project(deployment.root, summary=False)
    (project / "models" / "slow.py").write_text(SLOW_MODEL)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    deployment.definitions()  # fills the project cache before the run process starts
    env = {**os.environ, "BRIDGE_TEST_SLEEP": "120"}
    run = subprocess.Popen([sys.executable, "-c", RUN], env=env, cwd=deployment.root)
    try:
        deadline = time.monotonic() + 90
        while deployment.instance.get_latest_materialization_event(SOURCE) is None:
            assert run.poll() is None, "the run ended before its upstream model was recorded"
            assert time.monotonic() < deadline, "the upstream model was never recorded while the run went on"
            time.sleep(0.5)
        # recorded while SQLMesh is still inside the slow downstream model
        assert run.poll() is None
        assert deployment.instance.get_latest_materialization_event(SLOW) is None
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert deployment.instance.get_latest_materialization_event(SOURCE) is not None
    # a re-run of the same day by automation computes only what the killed run had not finished
    defs = deployment.definitions()
    job = dg.define_asset_job("catch_up", selection=[SOURCE, SLOW])
    job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("catch_up")
    again = job_def.execute_in_process(
        instance=deployment.instance,
        tags={"dagster/sensor_name": "catch_up", RANGE_START: "2026-03-01", RANGE_END: "2026-03-01"},
        raise_on_error=False,
    )
    assert again.success, [str(e.event_specific_data) for e in again.all_events if e.is_failure]
    assert materialized_keys(again) == {SLOW}


# a downstream model, one batch per day, that notes when each batch starts and ends
LOGGED_SLOW_MODEL = """\
import os
import time
from typing import Any
import typing as t

import pandas as pd
from sqlmesh import ExecutionContext, model
from sqlmesh.core.model.kind import ModelKindName


@model(
    "demo.slow",
    kind={"name": ModelKindName.INCREMENTAL_BY_TIME_RANGE, "time_column": "ds", "batch_size": 1},
    columns={"ds": "date", "n": "bigint"},
)
def execute(context: ExecutionContext, start, end, **kwargs: t.Any) -> pd.DataFrame:
    log = os.environ.get("BRIDGE_TEST_BATCH_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"start {time.time()}\\n")
    time.sleep(float(os.environ.get("BRIDGE_TEST_SLEEP", "0")))
    table = context.resolve_table("demo.daily_source")
    frame = context.fetchdf(
        f"SELECT ds, count(*)::BIGINT AS n FROM {table} "
        f"WHERE ds BETWEEN '{start:%Y-%m-%d}' AND '{end:%Y-%m-%d}' GROUP BY ds"
    )
    if log:
        with open(log, "a") as f:
            f.write(f"end {time.time()}\\n")
    return frame
"""


def test_an_interrupted_step_stops_sqlmesh_before_releasing_its_lock(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step ends while SQLMesh still has batches to run (an error raised in the step's thread
    as it reports the first model, where an interruption arrives): the batch in flight
    finishes, no other starts, and all that happens before the step lets go of its lock, so
    nothing of the run writes once another run may take the lock."""
    from dagster_sqlmesh_bridge import reporting

    project = write_project(deployment.root, summary=False)
    (project / "models" / "slow.py").write_text(LOGGED_SLOW_MODEL)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    batches = deployment.root / "batches.log"
    monkeypatch.setenv("BRIDGE_TEST_BATCH_LOG", str(batches))
    monkeypatch.setenv("BRIDGE_TEST_SLEEP", "1.5")
    reported = reporting.Reporter.model_results

    def interrupted(self: Any, model: Any, record: Any) -> Any:
        if model.name == "demo.daily_source":
            raise RuntimeError("injected: the step is interrupted")
        return reported(self, model, record)

    monkeypatch.setattr(reporting.Reporter, "model_results", interrupted)
    result = deployment.run([SOURCE, SLOW], start="2026-03-01", end="2026-03-04")
    ended = time.time()  # the step is over: its lock is released
    assert not result.success
    time.sleep(4.5)  # the three remaining batches of a SQLMesh left running would start meanwhile
    lines = [line.split() for line in batches.read_text().splitlines()] if batches.exists() else []
    assert not [t for _, t in lines if float(t) > ended], f"SQLMesh wrote after the step ended: {lines}"
    starts = [t for kind, t in lines if kind == "start"]
    assert len(starts) <= 1, f"batches started after the interruption: {lines}"
    assert len([k for k, _ in lines if k == "end"]) == len(starts)  # the one in flight finished
    logs = [e.message for e in deployment.instance.all_logs(result.run_id) if e.message]
    assert any("stopping SQLMesh after its current batch" in m for m in logs), lines
