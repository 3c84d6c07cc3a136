"""Latency of one click: "Materialize" one partition of a mart with its checks, as the UI does it.

    uv run python bench/bench_click.py [--asset marts/daily_revenue] [--day 2026-05-04] [--repeats 2]

Starts ``dg dev`` (webserver + daemon, isolated in a temp dir, as ``pipelines_tests/ui_server.py``),
builds the asset's upstream for the day, then launches a run of the asset and all its checks
for that partition through GraphQL ``launchRun`` (what the UI's button sends) and polls until it
ends. The baseline is a bare ``sqlmesh run`` of the same model and day (CLI, fresh process) on a
copy of the same data, measured in the same session. Prints launch-to-end, where the time went
(queue, run worker start, each step) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines_tests.ui_server import LOCATION_NAME, DagsterDev, dagster_dev, server_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SEED = """
import sys
import dagster as dg
from pipelines.definitions import defs
key = dg.AssetKey(sys.argv[1].split("/"))
day = sys.argv[2]
upstream = dg.AssetSelection.assets(key).upstream() - dg.AssetSelection.assets(key)
job = dg.define_asset_job("seed", selection=upstream)
resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("seed")
with dg.DagsterInstance.get() as instance:
    result = resolved.execute_in_process(instance=instance, partition_key=day, raise_on_error=False)
assert result.success
"""

CHECKS = """
query($key: AssetKeyInput!) { assetNodes(assetKeys: [$key]) {
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }
"""
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on Error { message } } }
"""
RUN = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
  status creationTime startTime endTime
  stepStats { stepKey status startTime endTime } } } }
"""
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def click(server: DagsterDev, asset: list[str], day: str) -> dict[str, Any]:
    """One launchRun of ``asset`` + its checks for ``day``; poll until the run ends."""
    [node] = server.graphql(CHECKS, {"key": {"path": asset}})["assetNodes"]
    checks = [c["name"] for c in node["assetChecksOrError"]["checks"]]
    params = {
        "selector": {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": asset}],
            "assetCheckSelection": [{"assetKey": {"path": asset}, "name": c} for c in checks],
        },
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    start = time.time()
    launched = server.graphql(LAUNCH, {"params": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launchRun: {launched}")
    run_id = launched["run"]["runId"]
    while True:
        run = server.graphql(RUN, {"id": run_id})["runOrError"]
        if run["status"] in DONE:
            break
        time.sleep(0.25)
    end = time.time()
    steps = sorted(run["stepStats"], key=lambda s: s["startTime"] or 0)
    return {
        "run_id": run_id,
        "status": run["status"],
        "checks": len(checks),
        "launch_to_end_s": end - start,
        "queued_s": run["startTime"] - run["creationTime"],  # queue + run worker start
        "start_to_first_step_s": (steps[0]["startTime"] - run["startTime"]) if steps else None,
        "steps": [
            {
                "step": s["stepKey"],
                "status": s["status"],
                "offset_s": s["startTime"] - run["startTime"],
                "s": (s["endTime"] or 0) - (s["startTime"] or 0),
            }
            for s in steps
        ],  # fmt: skip
        "last_step_to_end_s": (run["endTime"] - max(s["endTime"] or 0 for s in steps)) if steps else None,
    }


def bare_sqlmesh_run(data_dir: Path, lake: Path, model: str, day: str) -> float:
    """``sqlmesh run`` of one model and day in the bundled project, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "SQLMESH_", "DAGSTER_"))}
    env.update(PIPELINES_DATA_DIR=str(data_dir), PIPELINES_LAKE_URI=str(lake), PYTHONPATH=str(REPO))
    cmd = [
        str(Path(sys.executable).with_name("sqlmesh")), "run", "--start", day, "--end", day,
        "--select-model", model, "--no-auto-upstream", "--skip-janitor", "--ignore-cron",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=REPO / "pipelines" / "shop" / "sqlmesh_project", env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or "daily_revenue" not in done.stdout:
        raise RuntimeError(f"sqlmesh run did not evaluate {model}:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asset", default="marts/daily_revenue")
    parser.add_argument("--day", default="2026-05-04")
    parser.add_argument("--repeats", type=int, default=2, help="clicks, each on a fresh day after --day")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    asset = args.asset.split("/")
    days = [(date.fromisoformat(args.day) + timedelta(days=i)).isoformat() for i in range(args.repeats)]
    report: dict[str, Any] = {"asset": args.asset, "days": days, "clicks": [], "bare_sqlmesh_run_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**server_env(root), "PYTHONPATH": str(REPO)}  # this checkout's code, not the venv's
        (root / "dagster_home").mkdir()
        shutil.copyfile(REPO / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
        for day in days:  # the asset's upstream for each day, through Dagster, before the server
            subprocess.run([sys.executable, "-c", SEED, args.asset, day], env=env, cwd=REPO, check=True)
        bare_dir = root / "bare"
        shutil.copytree(root / "data", bare_dir / "data")
        shutil.copytree(root / "lake", bare_dir / "lake")
        for day in days:
            model = ".".join(asset)
            report["bare_sqlmesh_run_s"].append(
                bare_sqlmesh_run(bare_dir / "data", bare_dir / "lake", model, day)
            )
        with dagster_dev(root, extra_env={"PYTHONPATH": str(REPO)}) as server:
            for day in days:
                report["clicks"].append(click(server, asset, day))
    clicks = [c["launch_to_end_s"] for c in report["clicks"]]
    report["median_click_s"] = statistics.median(clicks)
    report["median_bare_s"] = statistics.median(report["bare_sqlmesh_run_s"])
    report["ratio"] = report["median_click_s"] / report["median_bare_s"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
