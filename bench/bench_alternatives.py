"""Materialize-all side by side (issue 20, item 10): our bridge, dagster-sqlmesh, bare SQLMesh.

    uv run python bench/bench_alternatives.py [--models 100] [--days 7] [--repeats 3]
        [--dsm-python /tmp/dsm-venv/bin/python] [--storages sqlite,pgbouncer]
        [--knobs off,subset,batch,both] [--tools bare,dsm,ours,floor]

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

Every Dagster side runs on the storages given (issue 27): ``sqlite``, Dagster's stock local
storage (a DAGSTER_HOME whose dagster.yaml only turns telemetry off), and ``pgbouncer``,
Dagster's PostgreSQL storage (durable commits, SCRAM logins) reached through a PgBouncer in
session mode as docs/production.md deploys it, a fresh database per side. Each Dagster side
runs once per knob setting of Dagster's event writes (``KNOBS``). Within a repetition the
storages, knob settings and tools alternate, so the machine's drift lands on all of them.
Two figures per tool: ``run`` (the work: Context load + plan for
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import OUR_LOAD, POSTGRES_YAML, REPO, RUN_DAGSTER, TIMED_RUN  # noqa: E402
from generate_project import generate  # noqa: E402

# the separate venv dagster-sqlmesh was installed in (``uv venv /tmp/dsm-venv``), not this project's
DSM_PYTHON = Path(tempfile.gettempdir()) / "dsm-venv" / "bin" / "python"

# Dagster's two event-write knobs (read in its installed source: the event log storage's
# ``supports_partition_subset_in_asset_materialization_planned_events`` and the instance's
# ``_get_event_batch_size``), each alone and together.
SUBSET = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true"}
BATCH = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}
KNOBS: dict[str, dict[str, str]] = {"off": {}, "subset": SUBSET, "batch": BATCH, "both": {**SUBSET, **BATCH}}

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


def _side(
    tool: str, storage: str, knobs: dict[str, str], models: int, days: int, dsm_python: Path | None, pg: Any
) -> dict[str, float]:
    """One tool once, on a freshly generated project and a fresh Dagster storage."""
    # the models start on the first day; prod plans take no start/end, only an execution time
    first, last, after = "2026-03-01", f"2026-03-{days:02d}", f"2026-03-{days + 1:02d}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = generate(root, models)
        config = project / "config.yaml"
        config.write_text(config.read_text().replace("start: '2026-01-01'", f"start: '{first}'"))
        home = root / "home"
        home.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if k not in {**SUBSET, **BATCH}},
            **knobs,
            "DAGSTER_HOME": str(home),
            "SQLMESH_PROJECT_DIR": str(project),
            "PIPELINES_DATA_DIR": str(root / "data"),
            "PIPELINES_LAKE_URI": str(root / "lake"),
            "PIPELINES_BRIDGE_CACHE_DIR": str(root / "cache"),
        }
        if storage == "sqlite":
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's stock storage
        else:
            server, bouncer = pg
            (home / "dagster.yaml").write_text(POSTGRES_YAML)
            env.update(server.env("BENCH_PG"))
            env.update(BENCH_PG_HOST=bouncer.host, BENCH_PG_PORT=str(bouncer.port))
            env["BENCH_PG_DB"] = server.create_database()
        logins = pg[1].logins() if storage == "pgbouncer" else 0
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
    result = {"run_s": run, "process_s": wall, "events": events}
    if storage == "pgbouncer":  # client connections PgBouncer accepted for the side's processes
        result["pg_connections"] = pg[1].logins() - logins
    return result


def one_repetition(
    models: int, days: int, tools: list[str], storages: list[str], knobs: list[str], pg: Any, flip: bool
) -> dict[str, dict[str, float]]:
    """Bare SQLMesh once, then every Dagster tool per storage and knob setting; ``flip`` reverses
    the order of the settings and tools, so alternate repetitions alternate who goes first."""
    results: dict[str, dict[str, float]] = {}
    sides = [(s, k, t) for s in storages for k in knobs for t in tools if t != "bare"]
    for storage, knob, tool in [("-", "-", "bare"), *(reversed(sides) if flip else sides)]:
        label = "bare" if tool == "bare" else f"{tool}/{storage}/{knob}"
        results[label] = _side(tool, storage, KNOBS.get(knob, {}), models, days, DSM, pg)
        print(label, results[label], file=sys.stderr, flush=True)
    return results


DSM: Path | None = None


def main() -> None:
    global DSM
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dsm-python", type=Path, default=DSM_PYTHON)
    parser.add_argument("--storages", default="sqlite", help="sqlite, pgbouncer")
    parser.add_argument("--knobs", default="off", help=", ".join(KNOBS))
    parser.add_argument("--tools", default="bare,dsm,ours,floor")
    args = parser.parse_args()
    tools = args.tools.split(",")
    DSM = args.dsm_python if args.dsm_python.exists() else None
    if DSM is None and "dsm" in tools:
        print(f"dagster-sqlmesh skipped: {args.dsm_python} does not exist", file=sys.stderr)
        tools.remove("dsm")
    storages, knobs = args.storages.split(","), args.knobs.split(",")
    pg = _start_pg() if "pgbouncer" in storages else None
    try:
        reps = [
            one_repetition(args.models, args.days, tools, storages, knobs, pg, flip=i % 2 == 1)
            for i in range(args.repeats)
        ]
    finally:
        if pg is not None:
            _stop_pg(pg)
    print(json.dumps(summarize(reps, args), indent=2))


def summarize(reps: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> dict[str, object]:
    """Medians of each side and of its per-repetition ratios (same run, same machine state) to
    bare SQLMesh and, for ours, to Dagster's floor plus bare SQLMesh (issue 27, item 2)."""
    report: dict[str, object] = {"models": args.models, "days": args.days, "repeats": args.repeats}
    for label in reps[0]:
        row: dict[str, object] = {"events": reps[0][label]["events"]}
        if "pg_connections" in reps[0][label]:
            row["pg_connections"] = statistics.median(r[label]["pg_connections"] for r in reps)
        for figure in ("run_s", "process_s"):
            row[figure] = statistics.median(r[label][figure] for r in reps)
            row[f"{figure}_vs_bare"] = statistics.median(r[label][figure] / r["bare"][figure] for r in reps)
        if label.startswith("ours/"):
            floor, dsm = label.replace("ours/", "floor/", 1), label.replace("ours/", "dsm/", 1)
            if floor in reps[0]:
                row["run_vs_floor_plus_bare"] = statistics.median(
                    r[label]["run_s"] / (r[floor]["run_s"] + r["bare"]["run_s"]) for r in reps
                )
            if dsm in reps[0]:
                row["run_vs_dsm"] = statistics.median(r[label]["run_s"] / r[dsm]["run_s"] for r in reps)
        report[label] = row
    return report


def _start_pg() -> tuple[Any, Any]:
    """A durable PostgreSQL (fsync on, as a managed one) behind a PgBouncer in session mode."""
    sys.path.insert(0, str(REPO))
    from pipelines_tests.pooler import start_pgbouncer
    from pipelines_tests.services import _candidate_bin_dirs, start_postgres

    server = start_postgres(_candidate_bin_dirs()[0][1], durable=True)
    return server, start_pgbouncer(server, "session")


def _stop_pg(pg: tuple[Any, Any]) -> None:
    from pipelines_tests.pooler import stop_pgbouncer
    from pipelines_tests.services import stop_postgres

    stop_pgbouncer(pg[1])
    stop_postgres(pg[0])


if __name__ == "__main__":
    main()
