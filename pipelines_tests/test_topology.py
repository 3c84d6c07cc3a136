"""Production as deployed, run here (issue 38, item 2): one container per run, nothing shared
but PostgreSQL and S3.

PostgreSQL (Dagster storage, SQLMesh state, DuckLake catalog) and the S3 server run on this
machine; the code location's gRPC server, the webserver and the daemon run in the image
``deploy/build-image.sh`` builds; the daemon's ``DockerRunLauncher`` (``deploy/dagster-podman.yaml``)
starts each run in a container of its own through ``podman system service``
(``pipelines_tests/topology.py``). The test then checks, through the webserver's GraphQL API:

* a tick of ``scheduled_daily_schedule`` (the daemon's scheduler, catching up today's 00:00
  tick: yesterday) and then an asset backfill of the three days before each run in their own
  container of that image, materialize through DuckLake on S3, and show their partitions and
  checks in the UI;
* a run restating those days whose container is killed (``podman kill``) mid-SQLMesh is marked
  failed by run monitoring, and the retry the daemon launches repeats its partitions: the rows per
  day in DuckLake are what the backfill wrote, with no duplicate order.

Slow (minutes); in ``.ci/prod-stack``. Skipped only where podman is absent; a missing
PostgreSQL fails it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dagster_sqlmesh_bridge import load_project
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.test_image_build import image, needs_podman  # noqa: F401 -- the image fixture
from pipelines_tests.test_ui import (
    ASSET_STATE,
    BACKFILL_STATUS,
    LAUNCH_BACKFILL,
    assert_checks_ran,
    key_str,
)
from pipelines_tests.topology import REPOSITORY, Topology, container_of, inspect, topology
from pipelines_tests.ui_server import LOCATION_NAME, DagsterDev, ServerError

SCHEDULE = "scheduled_daily_schedule"
JOB = "scheduled_daily"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RUN_TIMEOUT = 900  # seconds for one run on a shared 2-core machine

RUN_FIELDS = "runId status startTime endTime tags { key value } assetSelection { path }"
RUNS = "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { " + RUN_FIELDS + " } } } }"
RUN = (
    "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { "
    + RUN_FIELDS
    + " assetMaterializations { assetKey { path } partition } } } }"
)
RUN_MESSAGES = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection {
  events { __typename ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message } } ... on EngineEvent { error { message } } } } } }"""
START_SCHEDULE = """mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""
LAUNCH_RUN = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""
ASSET_NODES = "query { assetNodes { assetKey { path } isPartitioned jobNames } }"


def service(request: pytest.FixtureRequest, name: str) -> Any:
    """A service fixture; its skip (no PostgreSQL here) fails this test: only podman may be absent."""
    try:
        return request.getfixturevalue(name)
    except pytest.skip.Exception as exc:
        pytest.fail(f"{name} is not available, the topology needs it: {exc}")


def tags_of(run: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def runs(topo: Topology, **tags: str) -> list[dict[str, Any]]:
    flt = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    return topo.ui.graphql(RUNS, {"f": flt})["runsOrError"]["results"]


def run(topo: Topology, run_id: str) -> dict[str, Any]:
    return topo.ui.graphql(RUN, {"id": run_id})["runOrError"]


def wait(what: str, probe: Any, topo: Topology, timeout: float = RUN_TIMEOUT) -> Any:
    """Poll ``probe()`` until it returns something truthy; fail with the daemon's log if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(3)
    log = (topo.home.parent / "daemon.log").read_text(errors="replace")[-6000:]
    raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}\n--- daemon log:\n{log}")


def finished(topo: Topology, run_id: str) -> dict[str, Any] | None:
    found = run(topo, run_id)
    return found if found["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None


def backdate_schedule(server: PostgresServer, dagster_db: str, name: str, start: datetime) -> None:
    """Make the running schedule's start ``start``: the daemon's scheduler then catches up the
    tick after it (today's 00:00) at its first iteration instead of waiting for midnight. Only
    the stored start time changes; the tick, its run and its tags are the scheduler's own."""
    con = server.connect(dagster_db)
    try:
        with con, con.cursor() as cur:
            changed = 0
            for table, body in (("jobs", "job_body"), ("instigators", "instigator_body")):
                cur.execute(f"SELECT id, {body} FROM {table}")  # noqa: S608 -- fixed names
                for row_id, text in cur.fetchall():
                    if f'"{name}"' not in text or '"start_timestamp"' not in text:
                        continue
                    state = json.loads(text)
                    _set_start(state, start.timestamp())
                    cur.execute(
                        f"UPDATE {table} SET {body} = %s WHERE id = %s",  # noqa: S608
                        (json.dumps(state), row_id),
                    )
                    changed += 1
    finally:
        con.close()
    assert changed, f"no stored state of schedule {name} to backdate"


def _set_start(node: Any, timestamp: float) -> None:
    if isinstance(node, dict):
        if "start_timestamp" in node:
            node["start_timestamp"] = timestamp
        for value in node.values():
            _set_start(value, timestamp)
    elif isinstance(node, list):
        for value in node:
            _set_start(value, timestamp)


def rows_per_day(days: list[str]) -> dict[str, tuple[int, int]]:
    """Orders per day in DuckLake's ``marts.fct_orders``: (rows, distinct order ids)."""
    from pipelines.platform import warehouse

    with warehouse.warehouse() as con:
        found = con.execute(
            "SELECT order_date::VARCHAR, count(*), count(DISTINCT order_id) FROM marts.fct_orders"
            " WHERE order_date BETWEEN ? AND ? GROUP BY 1 ORDER BY 1",
            [days[0], days[-1]],
        ).fetchall()
    return {day: (rows, distinct) for day, rows, distinct in found}


def failures(topo: Topology, run_ids: list[str]) -> str:
    """What the runs' failure events say, for an assertion message."""
    lines = []
    for run_id in run_ids:
        events = topo.ui.graphql(RUN_MESSAGES, {"id": run_id})["logsForRun"]["events"]
        for e in events:
            error = (e.get("error") or {}).get("message")
            if "Failure" in e["__typename"] or error:
                lines.append(f"{run_id[:8]} {e['__typename']}: {e.get('message')} {error}")
    return "\n".join(lines)[-8000:]


def assert_in_its_own_container(topo: Topology, done: list[dict[str, Any]]) -> None:
    """Each run ran in a container of its own, from the code location's image, that exited 0."""
    ids = [container_of(r) for r in done]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for container_id in ids:
        info = inspect(container_id)
        assert info["ImageName"] == topo.image, info["ImageName"]
        assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 0, info["State"]
        assert info["Config"]["Cmd"][:3] == ["dagster", "api", "execute_run"], info["Config"]["Cmd"]
        env = dict(item.split("=", 1) for item in info["Config"]["Env"])
        assert env["PIPELINES_ENV"] == "prod" and "PIPELINES_PG_PASSWORD" in env


@pytest.mark.slow
@pytest.mark.timeout(3600)
@needs_podman
def test_schedule_backfill_and_a_killed_run_in_containers_of_their_own(
    image: str,  # noqa: F811 -- the fixture imported above
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = load_project(BUNDLED_SQLMESH_PROJECT, None)
    server: PostgresServer = service(request, "postgres_server")
    s3: S3Env = service(request, "s3_env")
    dbs = {name: server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = build_prod_env(server, s3, tmp_path, dbs)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    scheduled_day = (today - timedelta(days=1)).date().isoformat()
    days = [(today - timedelta(days=n)).date().isoformat() for n in (4, 3, 2)]
    timings: dict[str, float] = {}

    with prod_environment(monkeypatch, env):
        # the code location's environment; its paths are the image's own (/app/.data, baked caches)
        settings = {k: os.environ[k] for k in [*env, "PIPELINES_RATES_API_URL"]}
        for local_path in ("PIPELINES_DATA_DIR", "PIPELINES_BRIDGE_CACHE_DIR"):
            settings.pop(local_path)
        settings.update({k: os.environ[k] for k in s3.environ})
        dagster_env = {
            "DAGSTER_PG_HOST": server.host,
            "DAGSTER_PG_PORT": str(server.port),
            "DAGSTER_PG_USERNAME": server.user,
            "DAGSTER_PG_PASSWORD": server.password,
            "DAGSTER_PG_DB": dbs["dagster"],
            "DAGSTER_COMPUTE_LOGS_BUCKET": s3.bucket,
            "DAGSTER_COMPUTE_LOGS_PREFIX": "lake/dagster-logs",
            **s3.environ,
        }

        def start_schedule(ui: DagsterDev) -> None:
            selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY,
                        "scheduleName": SCHEDULE}  # fmt: skip
            started = ui.graphql(START_SCHEDULE, {"s": selector})["startSchedule"]
            assert started["__typename"] == "ScheduleStateResult", started
            backdate_schedule(server, dbs["dagster"], SCHEDULE, today - timedelta(minutes=1))

        t0 = time.monotonic()
        with topology(image, tmp_path, settings, dagster_env, before_daemon=start_schedule) as topo:
            timings.update(topo.started)
            ui = topo.ui

            # 1. the schedule, switched on before the daemon started, ticks once (today's 00:00,
            # caught up): one run of the whole job (raw, FULL and partitioned models) for yesterday
            t1 = time.monotonic()
            scheduled = wait(
                "the scheduled run", lambda: runs(topo, **{"dagster/schedule_name": SCHEDULE}), topo
            )
            (scheduled_run,) = scheduled
            assert tags_of(scheduled_run)["dagster/partition"] == scheduled_day
            sched_done = wait(
                "the scheduled run to finish", lambda: finished(topo, scheduled_run["runId"]), topo
            )
            timings["schedule tick and its run"] = time.monotonic() - t1
            assert sched_done["status"] == "SUCCESS", failures(topo, [sched_done["runId"]])

            # 2. then an asset backfill of three days of every asset of the schedule's job, as the UI
            # launches it: the partitioned ones for the three days and the unpartitioned (FULL)
            # models, whose restatement (a person's run restates) recomputes their partitioned
            # downstream, recorded per partition (an unpartitioned event failed the backfill).
            nodes = ui.graphql(ASSET_NODES)["assetNodes"]
            in_job = [n for n in nodes if JOB in n["jobNames"]]
            selection = sorted(key_str(n["assetKey"]["path"]) for n in in_job if n["isPartitioned"])
            unpartitioned = sorted(key_str(n["assetKey"]["path"]) for n in in_job if not n["isPartitioned"])
            assert unpartitioned, "the job has FULL models: the backfill must carry them too"
            params = {
                "partitionsByAssets": [
                    {
                        "assetKey": {"path": k.split("/")},
                        "partitions": {"range": {"start": days[0], "end": days[-1]}},
                    }
                    for k in selection
                ]
                + [{"assetKey": {"path": k.split("/")}, "partitions": None} for k in unpartitioned],
                "title": "test_topology: three days",
            }
            t1 = time.monotonic()
            launched = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
            backfill_id = launched["backfillId"]

            def backfill_done() -> dict[str, Any] | None:
                found = ui.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
                return found if found["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

            backfill = wait("the backfill", backfill_done, topo)
            timings["backfill of three days"] = time.monotonic() - t1
            assert backfill["status"] == "COMPLETED_SUCCESS", (
                f"{backfill['error']}\n{failures(topo, [r['id'] for r in backfill['runs']])}"
            )
            backfill_runs = [run(topo, r["id"]) for r in backfill["runs"]]
            assert backfill_runs and all(r["status"] == "SUCCESS" for r in backfill_runs), backfill_runs
            assert all(tags_of(r)["dagster/backfill"] == backfill_id for r in backfill_runs)

            assert_in_its_own_container(topo, [sched_done, *backfill_runs])
            for what, r in [("scheduled run", sched_done), *(("backfill run", r) for r in backfill_runs)]:
                timings[f"{what} {r['runId'][:8]}, start to end"] = r["endTime"] - r["startTime"]

            # 3. the UI shows every day materialized and the checks of both
            state = {
                key_str(n["assetKey"]["path"]): n
                for n in ui.graphql(ASSET_STATE, {"keys": [{"path": k.split("/")} for k in selection]})[
                    "assetNodes"
                ]
            }
            for key, node in state.items():
                assert node["assetMaterializations"], f"{key} was not materialized"
                if node["isPartitioned"]:
                    ranges = [(r["status"], r["startKey"], r["endKey"])
                              for r in node["assetPartitionStatuses"]["ranges"]]  # fmt: skip
                    # the four days; a FULL model's restatement recomputes its downstream's whole
                    # history (as ``sqlmesh plan --restate-model``), so the range may start earlier
                    assert any(
                        status == "MATERIALIZED" and start <= days[0] and end >= scheduled_day
                        for status, start, end in ranges
                    ), (key, ranges)
            assert_checks_ran(ui, state, project)

            # 4. DuckLake on S3 holds the four days, one row per order
            before = rows_per_day([*days, scheduled_day])
            assert sorted(before) == [*days, scheduled_day], before
            assert all(rows == distinct > 0 for rows, distinct in before.values()), before
            listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="lake/warehouse/")
            warehouse_files = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".parquet")]
            assert any("/marts__fct_orders__" in key for key in warehouse_files), warehouse_files[:20]

            # 5. a person's run restating the three days; its container is killed mid-SQLMesh
            execution = {
                "selector": {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY,
                             "jobName": JOB},
                "executionMetadata": {"tags": [{"key": RANGE_START, "value": days[0]},
                                               {"key": RANGE_END, "value": days[-1]}]},
            }  # fmt: skip
            launched_run = ui.graphql(LAUNCH_RUN, {"p": execution})["launchRun"]
            assert launched_run["__typename"] == "LaunchRunSuccess", launched_run
            victim = launched_run["run"]["runId"]
            sqlmesh_keys = {
                key_str(["staging", m.table]) for m in project.internal_models if m.schema == "staging"
            }

            def mid_sqlmesh() -> dict[str, Any] | None:
                found = run(topo, victim)
                assert found["status"] not in ("SUCCESS", "FAILURE"), (
                    f"run ended before the kill: {found['status']}"
                )
                done = {key_str(m["assetKey"]["path"]) for m in found["assetMaterializations"]}
                return found if done & sqlmesh_keys and container_of(found) else None

            running = wait("the run to be inside its SQLMesh step", mid_sqlmesh, topo)
            container_id = container_of(running)
            done_at_kill = len(running["assetMaterializations"])
            killed_at = time.monotonic()
            subprocess.run(["podman", "kill", container_id], check=True, capture_output=True, timeout=60)
            failed = wait(
                "run monitoring to fail the killed run", lambda: finished(topo, victim), topo, timeout=300
            )
            timings["kill to run FAILURE (run monitoring)"] = time.monotonic() - killed_at
            assert failed["status"] == "FAILURE", failed
            messages = [
                e.get("message") or ""
                for e in ui.graphql(RUN_MESSAGES, {"id": victim})["logsForRun"]["events"]
            ]
            assert any("Container status is exited" in m for m in messages), messages[-20:]
            assert inspect(container_id)["State"]["ExitCode"] == 137  # SIGKILL

            # 6. the daemon's retry (run_retries) repeats the partitions, without duplicates
            t2 = time.monotonic()
            (retry,) = wait(
                "the retry of the killed run", lambda: runs(topo, **{"dagster/parent_run_id": victim}), topo
            )
            retry = wait("the retry to finish", lambda: finished(topo, retry["runId"]), topo)
            timings["retry of the killed run"] = time.monotonic() - t2
            assert retry["status"] == "SUCCESS", retry
            assert (tags_of(retry)[RANGE_START], tags_of(retry)[RANGE_END]) == (days[0], days[-1])
            assert container_of(retry) not in (container_id, "")
            repeated = {m["partition"] for m in retry["assetMaterializations"]}
            assert set(days) <= repeated, repeated
            after = rows_per_day([*days, scheduled_day])
            assert after == before, (before, after)
        timings["whole topology test"] = time.monotonic() - t0

    rows = {day: r for day, (r, _) in before.items()}
    print(
        f"\nrows per day in marts.fct_orders (the same after the retry): {rows}; partitioned assets of "
        f"{JOB}: {len(selection)}; runs: 1 scheduled, {len(backfill_runs)} backfill, "
        f"1 killed (after {done_at_kill} materializations), 1 retry; "
        f"{len(warehouse_files)} Parquet files under warehouse/"
    )
    for what, seconds in timings.items():
        print(f"{what}: {seconds:.0f} s")
