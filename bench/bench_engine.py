"""Engine benchmarks, each a ratio against bare SQLMesh measured in the same run.

    uv run python bench/bench_engine.py [--sizes 100,500,1000] [--run-models 100] [--out docs/benchmarks.md]

1. definitions load (cached path) for generated N-model projects vs a bare ``sqlmesh.Context`` load,
   each in a fresh Python process (imports included on both sides);
2. materialize-all through Dagster vs a bare ``sqlmesh`` plan + run of the same intervals;
3. one new day after an N-day backfill vs the backfill itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_project import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

BARE_LOAD = """
import time, sys
t = time.perf_counter()
from sqlmesh import Context
ctx = Context(paths=sys.argv[1])
n = len(ctx.models)
ctx.close()
print(time.perf_counter() - t, n)
"""

OUR_LOAD = """
import time, sys
t = time.perf_counter()
from pipelines.definitions import build_definitions
defs = build_definitions()
n = len(list(defs.resolve_asset_graph().get_all_asset_keys()))
print(time.perf_counter() - t, n)
"""


def _timed(code: str, env: dict[str, str], *args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    return float(out[0])


def bench_load(size: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        project = generate(Path(tmp), size)
        env = {
            **os.environ,
            "SQLMESH_PROJECT_DIR": str(project),
            "PIPELINES_DATA_DIR": str(Path(tmp) / "data"),
            "PIPELINES_LAKE_URI": str(Path(tmp) / "lake"),
        }
        cold = _timed(OUR_LOAD, env)  # builds the cache
        bare = [_timed(BARE_LOAD, env, str(project)) for _ in range(repeats)]
        ours = [_timed(OUR_LOAD, env) for _ in range(repeats)]
    return {
        "models": size,
        "bare_context_s": statistics.median(bare),
        "dagster_defs_cached_s": statistics.median(ours),
        "dagster_defs_cold_s": cold,
        "ratio": statistics.median(ours) / statistics.median(bare),
    }


RUN_DAGSTER = """
import json, sys, time
import dagster as dg
from pipelines.definitions import build_definitions
start, end = sys.argv[1], sys.argv[2]
defs = build_definitions()
keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "bench"]
job = dg.define_asset_job("bench", selection=keys)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("bench")
with dg.instance_for_test() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    elapsed = time.perf_counter() - t
assert result.success
print(elapsed)
"""

RUN_BARE = """
import sys, time, datetime
from sqlmesh import Context
start, end = sys.argv[2], sys.argv[3]
t = time.perf_counter()
ctx = Context(paths=sys.argv[1])
if ctx.state_sync.get_environment("prod") is None:
    ctx.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True)
exec_time = (datetime.date.fromisoformat(end) + datetime.timedelta(days=1)).isoformat()
status = ctx.run("prod", start=start, end=end, execution_time=exec_time, ignore_cron=True, skip_janitor=True)
ctx.close()
assert status.name == "SUCCESS", status
print(time.perf_counter() - t)
"""


def bench_run(size: int, days: int) -> dict[str, float]:
    results: dict[str, float] = {"models": size, "days": days}
    first, last = "2026-03-01", f"2026-03-{days:02d}"
    nxt = f"2026-03-{days + 1:02d}"
    for label, code in (("bare_sqlmesh_s", RUN_BARE), ("dagster_s", RUN_DAGSTER)):
        with tempfile.TemporaryDirectory() as tmp:
            project = generate(Path(tmp), size)
            env = {
                **os.environ,
                "SQLMESH_PROJECT_DIR": str(project),
                "PIPELINES_DATA_DIR": str(Path(tmp) / "data"),
                "PIPELINES_LAKE_URI": str(Path(tmp) / "lake"),
                "PIPELINES_BRIDGE_CACHE_DIR": str(Path(tmp) / "cache"),
            }
            args = [str(project), first, last] if code is RUN_BARE else [first, last]
            _timed(OUR_LOAD, env)  # warm the definitions cache outside the timing
            results[label] = _timed(code, env, *args)
            if code is RUN_DAGSTER:
                results["dagster_next_day_s"] = _timed(code, env, nxt, nxt)
    results["ratio"] = results["dagster_s"] / results["bare_sqlmesh_s"]
    results["next_day_vs_backfill"] = results["dagster_next_day_s"] / results["dagster_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-models", type=int, default=100)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"load": [bench_load(int(s), args.repeats) for s in args.sizes.split(",")]}
    report["run"] = bench_run(args.run_models, args.days)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
