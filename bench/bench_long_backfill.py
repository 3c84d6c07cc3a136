"""A long single-run backfill of one model: ours vs bare SQLMesh vs Dagster's floor (issue 20.4).

    uv run python bench/bench_long_backfill.py [--days 2500] [--repeats 2] [--storage local]
        [--json out.json]

One INCREMENTAL_BY_TIME_RANGE daily model over a small generated source (``bench_engine``'s root
model, 10 rows a day), ``--days`` days from 2019-01-01 computed in one go by each side, every side
in a new process with a fresh project, warehouse and DAGSTER_HOME per repetition:

- ``bare``: ``sqlmesh`` plan (no backfill) + run of the range;
- ``ours``: the range as one single-run backfill of our code location (``execute_in_process`` with
  the range tags, what ``pipelines run --start --end --select`` launches), profile hook and the
  model's quality checks on;
- ``ours_no_checks``: the same with the checks left out (``--sides`` picks it; not run by default);
- ``ours_no_profile``: the same with ``PIPELINES_PROFILE=0`` and the checks left out;
- ``floor``: a Dagster asset with the same daily partitions whose step yields one
  ``MaterializeResult`` for the range and does nothing else: what Dagster itself costs to record
  the range on this storage, whatever the integration.

Reported per side: median wall seconds (and the ratio to bare), DAGSTER_HOME size after the run
(split into the SQLite event log and the captured compute logs), events written, the largest
materialization event's serialized metadata and the largest check evaluation event.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import OUR_LOAD, REPO, RUN_BARE, _dagster_home, _timed  # noqa: E402
from generate_project import generate  # noqa: E402

FIRST = date(2019, 1, 1)

# appended to a script defining ``job_def``: one timed ranged run, then what it wrote
TIMED_RANGE_RUN = """
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    elapsed = time.perf_counter() - t
    assert result.success
    logs = instance.all_logs(result.run_id)
    sizes = [len(dg.serialize_value(e.asset_materialization.metadata))
             for e in logs if e.is_dagster_event and e.dagster_event.is_step_materialization]
    checks = [len(dg.serialize_value(e)) for e in logs
              if e.is_dagster_event and e.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
print(json.dumps({"s": elapsed, "events": len(logs), "materializations": len(sizes),
                  "max_metadata_bytes": max(sizes), "check_evaluations": len(checks),
                  "max_check_event_bytes": max(checks, default=0)}))
"""

OURS = """
import json, os, sys, time
import dagster as dg
import sqlmesh.core.context
from pipelines.definitions import defs
start, end = sys.argv[1], sys.argv[2]
keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "bench"]
selection = dg.AssetSelection.assets(*keys)
if os.environ.get("BENCH_CHECKS") == "0":
    selection = selection.without_checks()
job = dg.define_asset_job("bench", selection=selection)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("bench")
"""

# Dagster alone: the model's asset spec (same key, same daily partitions), no checks, no work.
FLOOR = """
import json, sys, time
import dagster as dg
from pipelines.definitions import defs
start, end = sys.argv[1], sys.argv[2]
graph = defs.resolve_asset_graph()
key = next(k for k in graph.get_all_asset_keys() if k.path[0] == "bench")
spec = next(s for s in graph.get(key).assets_def.specs if s.key == key)

@dg.multi_asset(name="floor", specs=[spec], backfill_policy=dg.BackfillPolicy.single_run())
def floor(context: dg.AssetExecutionContext):
    yield dg.MaterializeResult(asset_key=key)

job_def = dg.Definitions(assets=[floor], jobs=[dg.define_asset_job("floor")]).resolve_job_def("floor")
"""

SIDES = ("bare", "ours", "ours_no_profile", "floor")


def _project(tmp: Path) -> tuple[Path, dict[str, str]]:
    """One root model starting at FIRST, its warehouse where the profile hook and checks look."""
    project = generate(tmp, 1)
    data = tmp / "data"
    data.mkdir()
    config = project / "config.yaml"
    config.write_text(
        config.read_text()
        .replace("start: '2026-01-01'", f"start: '{FIRST.isoformat()}'")
        .replace(str(tmp / "db" / "warehouse.duckdb"), str(data / "warehouse.duckdb"))
    )
    env = {
        **os.environ,
        "SQLMESH_PROJECT_DIR": str(project),
        "PIPELINES_DATA_DIR": str(data),
        "PIPELINES_LAKE_URI": str(tmp / "lake"),
        "PIPELINES_BRIDGE_CACHE_DIR": str(tmp / "cache"),
    }
    return project, env


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_side(side: str, days: int, storage: str) -> dict[str, float]:
    start, end = FIRST.isoformat(), (FIRST + timedelta(days=days - 1)).isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        project, env = _project(Path(tmp))
        if side == "bare":
            return {"s": _timed(RUN_BARE, env, str(project), start, end)}
        env.update(_dagster_home(Path(tmp) / "home", storage))
        if side in ("ours_no_checks", "ours_no_profile"):
            env["BENCH_CHECKS"] = "0"
        if side == "ours_no_profile":
            env["PIPELINES_PROFILE"] = "0"
        _timed(OUR_LOAD, env)  # the definitions cache, built outside the timing
        code = (FLOOR if side == "floor" else OURS) + TIMED_RANGE_RUN
        out = subprocess.run(
            [sys.executable, "-c", code, start, end], env=env, capture_output=True, text=True, cwd=REPO
        )
        if out.returncode:
            raise RuntimeError(f"{side} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        home = Path(env["DAGSTER_HOME"])
        result["dagster_home_mb"] = _du(home) / 1e6
        result["event_log_mb"] = _du(home / "history") / 1e6  # runs.db, index.db, one db per run
        result["compute_logs_mb"] = _du(home / "storage") / 1e6  # the step's captured stdout/stderr
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--storage", default="local", choices=("local", "dagster-default"))
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sides = args.sides.split(",")
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    for rep in range(args.repeats):  # sides interleaved, order alternating, so load drifts hit all
        for side in sides if rep % 2 == 0 else reversed(sides):
            runs[side].append(run_side(side, args.days, args.storage))
            print(side, runs[side][-1], file=sys.stderr, flush=True)
    report: dict[str, object] = {"days": args.days, "repeats": args.repeats, "storage": args.storage}
    bare = statistics.median(r["s"] for r in runs["bare"]) if "bare" in runs else None
    for side, results in runs.items():
        row = {k: statistics.median(r[k] for r in results) for k in results[0]}
        row["all_s"] = [r["s"] for r in results]
        if bare:
            row["ratio_vs_bare"] = row["s"] / bare
        report[side] = row
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
