"""Materialize-all side by side (issue 20, item 10): our bridge, dagster-sqlmesh, bare SQLMesh.

    uv run python bench/bench_alternatives.py [--models 100] [--days 7] [--repeats 3]
        [--dsm-python /tmp/dsm-venv/bin/python]

Each repetition generates a fresh project and database per tool (``generate_project.py``, 10
rows per model-day) and runs each tool in a new process, in one run of this script:

- ``bare``: a bare ``sqlmesh plan`` of prod over the days (``Context.plan`` with start/end);
- ``dsm``: dagster-sqlmesh (one multi-asset, no partitions) materializing everything, in the
  separate venv given by ``--dsm-python`` (skipped, and said so, when that python is missing:
  it is not a dependency of this project);
- ``ours``: this repository's code location materializing every model over the days (one
  partition per model and day, plus the audits' checks);
- ``floor``: Dagster alone recording what ours records (the same specs, checks and
  partitions; a step that does no work).

Every Dagster side runs on Dagster's stock local storage (a DAGSTER_HOME whose dagster.yaml
only turns telemetry off). Two figures per tool: ``run`` (the work: Context load + plan for
bare, ``execute_in_process`` for the Dagster sides, imports and definitions before the clock)
and ``process`` (the whole process's wall time, imports and definitions included; ours reads
the definitions cache a first process wrote, as a deployed image does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import OUR_LOAD, REPO, RUN_DAGSTER, TIMED_RUN  # noqa: E402
from generate_project import generate  # noqa: E402

# the separate venv dagster-sqlmesh was installed in (``uv venv /tmp/dsm-venv``), not this project's
DSM_PYTHON = Path(tempfile.gettempdir()) / "dsm-venv" / "bin" / "python"

BARE_PLAN = """
import sys, time
from sqlmesh import Context
execution_time = sys.argv[4]
t = time.perf_counter()
ctx = Context(paths=sys.argv[1])
ctx.plan("prod", execution_time=execution_time, auto_apply=True, no_prompts=True)
ctx.close()
print(time.perf_counter() - t, 0)
"""

# Dagster alone recording what our run records: every model's partitions and every check of the
# job (the audits' and the quality rules'), from one step that does no work.
RUN_FLOOR = """
import sys, time
import dagster as dg
from pipelines.definitions import defs
start, end = sys.argv[1], sys.argv[2]
graph = defs.resolve_asset_graph()
keys = [k for k in graph.get_all_asset_keys() if k.path[0] == "bench"]
models = graph.get(keys[0]).assets_def
checks = [dg.AssetCheckSpec(c.name, asset=c.asset_key)
          for c in graph.asset_check_keys if c.asset_key in set(keys)]

@dg.multi_asset(name="floor", specs=list(models.specs), check_specs=checks,
                can_subset=True, backfill_policy=dg.BackfillPolicy.single_run())
def floor(context: dg.AssetExecutionContext):
    for key in graph.toposorted_asset_keys:
        if key in context.selected_asset_keys:
            yield dg.MaterializeResult(asset_key=key)
    for check in context.selected_asset_check_keys:
        yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

job_def = dg.Definitions(assets=[floor], jobs=[dg.define_asset_job("floor")]).resolve_job_def("floor")
"""

DSM_RUN = """
import sys, time
import dagster as dg
from dagster_sqlmesh import SQLMeshContextConfig, SQLMeshResource, sqlmesh_assets
project, execution_time = sys.argv[1], sys.argv[4]
config = SQLMeshContextConfig(path=project, gateway="local")

@sqlmesh_assets(environment="prod", config=config, name="bench")
def bench(context: dg.AssetExecutionContext, sqlmesh: SQLMeshResource):
    yield from sqlmesh.run(
        context, config=config, environment="prod",
        plan_options={"execution_time": execution_time}, run_options={"execution_time": execution_time},
    )

defs = dg.Definitions(
    assets=[bench], resources={"sqlmesh": SQLMeshResource()}, jobs=[dg.define_asset_job("all")]
)
job_def = defs.resolve_job_def("all")
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance)
    elapsed = time.perf_counter() - t
    events = len(instance.all_logs(result.run_id))
assert result.success
print(elapsed, events)
"""


def _process(python: str, code: str, env: dict[str, str], *args: str) -> tuple[float, float, int]:
    """(timed work, whole process wall time, events) of ``code`` in a new process."""
    started = time.perf_counter()
    done = subprocess.run(
        [python, "-c", code, *args], env=env, capture_output=True, text=True, cwd=REPO, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{code[:40]!r} failed:\n{done.stderr[-3000:]}")
    out = done.stdout.split()
    return float(out[-2]), wall, int(out[-1])


def one_repetition(models: int, days: int, dsm_python: Path | None) -> dict[str, dict[str, float]]:
    # the models start on the first day; prod plans take no start/end, only an execution time
    first, last, after = "2026-03-01", f"2026-03-{days:02d}", f"2026-03-{days + 1:02d}"
    results: dict[str, dict[str, float]] = {}
    for tool in ("bare", "dsm", "ours", "floor"):
        if tool == "dsm" and dsm_python is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            project = generate(root, models)
            config = project / "config.yaml"
            config.write_text(config.read_text().replace("start: '2026-01-01'", f"start: '{first}'"))
            home = root / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's stock storage
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "SQLMESH_PROJECT_DIR": str(project),
                "PIPELINES_DATA_DIR": str(root / "data"),
                "PIPELINES_LAKE_URI": str(root / "lake"),
                "PIPELINES_BRIDGE_CACHE_DIR": str(root / "cache"),
            }
            if tool == "bare":
                run, wall, events = _process(sys.executable, BARE_PLAN, env, str(project), first, last, after)
            elif tool == "dsm":
                env.pop("VIRTUAL_ENV", None)
                run, wall, events = _process(str(dsm_python), DSM_RUN, env, str(project), first, last, after)
            else:
                subprocess.run(
                    [sys.executable, "-c", OUR_LOAD], env=env, cwd=REPO, check=True, capture_output=True
                )
                code = (RUN_DAGSTER if tool == "ours" else RUN_FLOOR) + TIMED_RUN
                run, wall, events = _process(sys.executable, code, env, first, last)
            results[tool] = {"run_s": run, "process_s": wall, "events": events}
            print(tool, results[tool], file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dsm-python", type=Path, default=DSM_PYTHON)
    args = parser.parse_args()
    dsm = args.dsm_python if args.dsm_python.exists() else None
    if dsm is None:
        print(f"dagster-sqlmesh skipped: {args.dsm_python} does not exist", file=sys.stderr)
    reps = [one_repetition(args.models, args.days, dsm) for _ in range(args.repeats)]
    report: dict[str, object] = {"models": args.models, "days": args.days, "repeats": args.repeats}
    for tool in reps[0]:
        for figure in ("run_s", "process_s"):
            # ratio per repetition (same run, same machine state), then the median
            ratios = [r[tool][figure] / r["bare"][figure] for r in reps]
            report[f"{tool}_{figure}"] = statistics.median(r[tool][figure] for r in reps)
            report[f"{tool}_{figure}_vs_bare"] = statistics.median(ratios)
        report[f"{tool}_events"] = reps[0][tool]["events"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
