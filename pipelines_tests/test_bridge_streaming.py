"""Results stream out of a SQLMesh run: a model is recorded as soon as SQLMesh finished it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from pipelines_tests.conftest import RANGE_END, RANGE_START, Deployment, materialized_keys
from pipelines_tests.sqlmesh_projects import write_project

SOURCE, SLOW = dg.AssetKey(["demo", "daily_source"]), dg.AssetKey(["demo", "slow"])

# a downstream model that takes as long as BRIDGE_TEST_SLEEP says (only the first run sets it)
SLOW_MODEL = """\
import os
import time
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
