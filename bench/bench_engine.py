"""Engine benchmarks, each a ratio against bare SQLMesh measured in the same run.

    uv run python bench/bench_engine.py [--sizes 100,500,1000] [--run-models 50] [--days 7]
        [--rows-per-day 10,100000] [--storages local,dagster-default,postgres] [--json out.json]

1. definitions load (cached path) for generated N-model projects vs a bare ``sqlmesh.Context`` load,
   each in a fresh Python process (imports included on both sides);
2. materialize-all through Dagster vs a bare ``sqlmesh`` plan + run of the same intervals, at a
   tiny data volume (Dagster's fixed cost per asset x partition dominates) and a larger one, on
   each Dagster instance (the repository's dagster.yaml, Dagster's bare default, PostgreSQL as in production);
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
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generate_project import generate  # noqa: E402

if TYPE_CHECKING:
    from pipelines_tests.services import PostgresServer

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

# what ``dg dev`` does: import the code location's module, whose ``defs`` are built once
OUR_LOAD = """
import time, sys
t = time.perf_counter()
from pipelines.definitions import defs
n = len(list(defs.resolve_asset_graph().get_all_asset_keys()))
print(time.perf_counter() - t, n)
"""


# the same project declared in a team's dg project (defs.yaml), loaded by Dagster's defs-folder
# loader from the component's state (written once by `dg utils refresh-defs-state`)
COMPONENT_LOAD = """
import time, sys
t = time.perf_counter()
from pathlib import Path
import dagster as dg
defs = dg.load_from_defs_folder(project_root=Path(sys.argv[1]))
n = len(list(defs.resolve_asset_graph().get_all_asset_keys()))
print(time.perf_counter() - t, n)
"""


def write_dg_project(root: Path, sqlmesh_project: Path) -> Path:
    """A minimal dg project declaring ``sqlmesh_project`` with the integration's component."""
    folder = root / "bench_team" / "defs" / "models"
    folder.mkdir(parents=True)
    (root / "bench_team" / "__init__.py").write_text("")
    (root / "bench_team" / "defs" / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "bench_team"\nversion = "0.1.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "bench_team"\n'
    )
    (folder / "defs.yaml").write_text(
        f"type: dagster_sqlmesh_bridge.SQLMeshProjectComponent\nattributes:\n  project: {sqlmesh_project}\n"
    )
    return root


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
        team = write_dg_project(Path(tmp) / "team", project)
        team_env = {**env, "PYTHONPATH": str(team)}
        team_env.pop("SQLMESH_PROJECT_DIR")
        dg = str(Path(sys.executable).parent / "dg")
        refresh = [dg, "utils", "refresh-defs-state"]
        subprocess.run(refresh, cwd=team, env=team_env, check=True, capture_output=True)
        bare, ours, component = [], [], []
        for _ in range(repeats):  # alternated, so load from other tenants hits every side alike
            bare.append(_timed(BARE_LOAD, env, str(project)))
            ours.append(_timed(OUR_LOAD, env))
            component.append(_timed(COMPONENT_LOAD, team_env, str(team)))
    return {
        "models": size,
        "bare_context_s": statistics.median(bare),
        "dagster_defs_cached_s": statistics.median(ours),
        "component_defs_yaml_from_state_s": statistics.median(component),
        "dagster_defs_cold_s": cold,
        "ratio": statistics.median(ours) / statistics.median(bare),
        "component_ratio": statistics.median(component) / statistics.median(bare),
        "ratio_median_of_pairs": statistics.median(o / b for o, b in zip(ours, bare, strict=True)),
    }


def bench_cold_load(size: int, repeats: int) -> dict[str, float]:
    """Cache-miss loads, fair to both sides: each repetition generates a fresh project (no
    SQLMesh cache, no bridge cache) for bare SQLMesh and another for us, alternating."""
    bare, ours = [], []
    for _ in range(repeats):
        for side, code, out in (("bare", BARE_LOAD, bare), ("ours", OUR_LOAD, ours)):
            with tempfile.TemporaryDirectory() as tmp:
                project = generate(Path(tmp), size)
                env = {
                    **os.environ,
                    "SQLMESH_PROJECT_DIR": str(project),
                    "PIPELINES_DATA_DIR": str(Path(tmp) / "data"),
                    "PIPELINES_LAKE_URI": str(Path(tmp) / "lake"),
                }
                out.append(_timed(code, env, str(project)) if side == "bare" else _timed(code, env))
    return {
        "models": size,
        "bare_context_cold_s": statistics.median(bare),
        "dagster_defs_cold_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(bare),
    }


# What ``_run`` appends to each Dagster script: one timed run of its ``job_def`` over the range.
TIMED_RUN = """
with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME/dagster.yaml picks the storage
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    elapsed = time.perf_counter() - t
    events = len(instance.all_logs(result.run_id))
assert result.success
print(elapsed, events)
"""

# Imports happen before the clock starts, as in RUN_BARE: the step imports SQLMesh lazily (the
# cached definitions never need it), which would otherwise put ~1.3 s of imports on our side only.
RUN_DAGSTER = """
import json, sys, time
import dagster as dg
import sqlmesh.core.context
from pipelines.definitions import defs
start, end = sys.argv[1], sys.argv[2]
keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "bench"]
job = dg.define_asset_job("bench", selection=keys)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("bench")
"""

# Dagster's own floor: the same asset graph (specs, checks, partitions, deps) whose step does no
# work at all, run the same way. No integration can cost less than this.
RUN_FLOOR = """
import sys, time
import dagster as dg
from pipelines.definitions import defs
start, end = sys.argv[1], sys.argv[2]
graph = defs.resolve_asset_graph()
keys = [k for k in graph.get_all_asset_keys() if k.path[0] == "bench"]
models = graph.get(keys[0]).assets_def

@dg.multi_asset(name="floor", specs=list(models.specs), check_specs=list(models.check_specs),
                can_subset=True, backfill_policy=dg.BackfillPolicy.single_run())
def floor(context: dg.AssetExecutionContext):
    for key in graph.toposorted_asset_keys:
        if key in context.selected_asset_keys:
            yield dg.MaterializeResult(asset_key=key)
    for check in context.selected_asset_check_keys:
        yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)

job_def = dg.Definitions(assets=[floor], jobs=[dg.define_asset_job("floor")]).resolve_job_def("floor")
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

# Dagster instance storages compared: the repository's dagster.yaml (Dagster's SQLite storage plus
# our pools), Dagster's bare default, and PostgreSQL (production), each in a DAGSTER_HOME of its own.
STORAGES = ("local", "dagster-default", "postgres")
POSTGRES_YAML = """
telemetry: {enabled: false}
storage:
  postgres:
    postgres_db:
      hostname: {env: BENCH_PG_HOST}
      port: {env: BENCH_PG_PORT}
      username: {env: BENCH_PG_USER}
      password: {env: BENCH_PG_PASSWORD}
      db_name: {env: BENCH_PG_DB}
      scheme: postgresql+psycopg2
"""


def _dagster_home(home: Path, storage: str) -> dict[str, str]:
    home.mkdir(parents=True)
    if storage == "local":
        (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    elif storage == "dagster-default":
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    else:
        (home / "dagster.yaml").write_text(POSTGRES_YAML)
    return {"DAGSTER_HOME": str(home)}


def _postgres_env(server: PostgresServer, name: str) -> dict[str, str]:
    return {**server.env("BENCH_PG"), "BENCH_PG_DB": server.create_database(name)}


def bench_run(size: int, days: int, rows_per_day: int, storages: list[str]) -> dict[str, object]:
    """Bare SQLMesh once, then our Dagster run on each storage, each on a fresh copy of the data."""
    first, last = "2026-03-01", f"2026-03-{days:02d}"
    nxt = f"2026-03-{days + 1:02d}"
    results: dict[str, object] = {"models": size, "days": days, "rows_per_model_day": rows_per_day}
    server = None
    if "postgres" in storages:
        from pipelines_tests.services import _candidate_bin_dirs, start_postgres

        server = start_postgres(_candidate_bin_dirs()[0][1], durable=True)
    try:
        for label in ["bare", *storages]:
            with tempfile.TemporaryDirectory() as tmp:
                project = generate(Path(tmp), size, rows_per_day=rows_per_day)
                env = {
                    **os.environ,
                    "SQLMESH_PROJECT_DIR": str(project),
                    "PIPELINES_DATA_DIR": str(Path(tmp) / "data"),
                    "PIPELINES_LAKE_URI": str(Path(tmp) / "lake"),
                    "PIPELINES_BRIDGE_CACHE_DIR": str(Path(tmp) / "cache"),
                }
                if label == "bare":
                    results["bare_sqlmesh_s"] = _timed(RUN_BARE, env, str(project), first, last)
                    bare_next = _timed(RUN_BARE, env, str(project), nxt, nxt)
                    results["bare_next_day_vs_backfill"] = bare_next / results["bare_sqlmesh_s"]
                    continue
                env.update(_dagster_home(Path(tmp) / "home", label))
                if label == "postgres":
                    env.update(_postgres_env(server, f"bench_{size}_{rows_per_day}"))
                _timed(OUR_LOAD, env)  # warm the definitions cache outside the timing
                seconds, events = _run(env, first, last)
                next_day, _ = _run(env, nxt, nxt)
                bare = float(results["bare_sqlmesh_s"])  # type: ignore[arg-type]
                if label == "local":
                    env["DAGSTER_HOME"] = _dagster_home(Path(tmp) / "floor", label)["DAGSTER_HOME"]
                    floor, floor_events = _run(env, first, last, RUN_FLOOR)
                    results["dagster_floor"] = {
                        "s": floor,
                        "ratio_vs_bare": floor / bare,
                        "events": floor_events,
                    }
                results[label] = {
                    "dagster_s": seconds,
                    "ratio_vs_bare": seconds / bare,
                    "events": events,
                    "overhead_ms_per_asset_partition": 1000 * (seconds - bare) / (size * days),
                    "next_day_s": next_day,
                    "next_day_vs_backfill": next_day / seconds,
                }
    finally:
        if server is not None:
            from pipelines_tests.services import stop_postgres

            stop_postgres(server)
    return results


def _run(env: dict[str, str], start: str, end: str, code: str = RUN_DAGSTER) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", code + TIMED_RUN, start, end],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    return float(out[-2]), int(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-models", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", default="10,100000", help="rows per model-day, one run each")
    parser.add_argument("--storages", default=",".join(STORAGES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cold-sizes", default="", help="cache-miss loads on fresh projects, e.g. 1000")
    parser.add_argument("--only-load", action="store_true", help="skip the materialize benchmarks")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report: dict[str, object] = {"load": [bench_load(n, args.repeats) for n in sizes]}
    report["cold_load"] = [bench_cold_load(int(n), args.repeats) for n in args.cold_sizes.split(",") if n]
    if args.only_load:
        print(json.dumps(report, indent=2))
        return
    report["run"] = [
        bench_run(args.run_models, args.days, int(rows), args.storages.split(","))
        for rows in args.rows_per_day.split(",")
    ]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
