"""Pipeline benchmarks, as ratios against a baseline measured in the same run.

    uv run python bench/bench_pipeline.py [--scale 20] [--days 3] [--repeats 3]
        [--only ingestion|checks|generated-checks] [--models 100] [--rows-per-day 100000]
        [--dagster-storage sqlite|postgres] [--json out.json]

1. ingestion throughput (rows/s) of our validated, atomic partition write vs a bare DuckDB
   ``COPY ... TO`` of the same rows from the same source database to Parquet;
2. the cost of all checks (SQLMesh audits, profiles, anomaly/freshness/schema checks) relative
   to materialization: the demo pipeline with checks vs the same assets without them;
3. the same on a generated project (``bench/generate_project.py``: ``--models`` daily models,
   ``--rows-per-day`` rows per model-day), a fresh project and database for every run.
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
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_engine import POSTGRES_YAML, _postgres_env  # noqa: E402
from generate_project import generate  # noqa: E402


def bench_ingestion(scale: float, repeats: int = 7) -> dict[str, float]:
    from pipelines.platform.duckdb_extensions import install_extensions
    from pipelines.platform.lake import Lake
    from pipelines.shop.sources import demo
    from pipelines.shop.sources.contracts import CONTRACTS
    from pipelines.shop.sources.readers import attach_shop_database, database_query, ingest_database

    install_extensions()
    day = date(2026, 3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = str(Path(tmp) / "shop.sqlite")
        con = duckdb.connect()
        attach_shop_database(con, sqlite_path=sqlite, read_only=False)
        demo.seed_shop_database(con, "shop", [day], scale)
        con.close()
        contract = CONTRACTS["order_items"]
        lake = Lake(str(Path(tmp) / "lake"))
        ours, bare, rows = [], [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            result = ingest_database(contract, day.isoformat(), lake, {"sqlite_path": sqlite})
            ours.append(time.perf_counter() - t)
            rows = result.rows_landed
            t = time.perf_counter()
            con = duckdb.connect()
            attach_shop_database(con, sqlite_path=sqlite)
            sql, params = database_query(contract, day.isoformat())
            con.execute(f"COPY ({sql}) TO '{tmp}/bare.parquet' (FORMAT parquet, COMPRESSION zstd)", params)
            con.close()
            bare.append(time.perf_counter() - t)
    ours_rps, bare_rps = rows / statistics.median(ours), rows / statistics.median(bare)
    return {
        "rows": rows,
        "ours_rows_per_s": ours_rps,
        "bare_copy_rows_per_s": bare_rps,
        "ratio": ours_rps / bare_rps,
    }


CHECKS_RUN = """
import json, sys, time
import dagster as dg
from pipelines.definitions import build_definitions
start, end, mode = sys.argv[1], sys.argv[2], sys.argv[3]
with_checks = mode != "0"
if mode == "floor":  # Dagster's own cost of the checks: the same results, each a constant pass
    from dagster_sqlmesh_bridge.quality.step import QualityHook
    from dagster_sqlmesh_bridge.resource import ModelReport

    def constant(self, ctx, model, key, partitions, context):
        specs = [s for s in self.check_specs() if s.asset_key == key]
        passed = [dg.AssetCheckResult(asset_key=key, check_name=s.name, passed=True) for s in specs]
        return ModelReport(checks=passed)

    QualityHook.materialized = constant
defs = build_definitions()
selection = dg.AssetSelection.all()
if len(sys.argv) > 4:  # a generated project: its models only (not the shop's ingestion)
    graph = defs.resolve_asset_graph()
    selection = dg.AssetSelection.assets(*(k for k in graph.get_all_asset_keys() if k.path[0] == sys.argv[4]))
selection = selection if with_checks else selection.without_checks()
job = dg.define_asset_job("bench", selection=selection)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("bench")
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    elapsed = time.perf_counter() - t
    records = instance.all_logs(result.run_id)
assert result.success
checks = sum(1 for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
# where the time went: each step's wall time, from its start and end events
started, steps = {}, {}
for r in records:
    e = r.dagster_event
    if e is None:
        continue
    if e.event_type_value == "STEP_START":
        started[e.step_key] = r.timestamp
    elif e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in started:
        steps[e.step_key] = r.timestamp - started[e.step_key]
print(json.dumps({"seconds": elapsed, "checks": checks, "events": len(records),
                  "sqlmesh_step_s": sum(v for k, v in steps.items() if k.startswith("sqlmesh_models"))}))
"""


def bench_checks(
    days: int,
    scale: float,
    repeats: int = 3,
    models: int | None = None,
    rows_per_day: int = 100_000,
    storage: str = "sqlite",
) -> dict[str, Any]:
    """Same data, fresh deployments: materialize without checks, with every check, and with
    every check answered by a constant (Dagster's own cost of recording them: the floor).

    The variants alternate (A B C A B C ...) so that a change in machine load hits all alike;
    the overhead is the median of the ratios within each triple. With ``models`` the deployment
    runs a generated project of that many daily models instead of the demo (generated afresh,
    with its own warehouse and SQLMesh state, for every run). ``storage="postgres"`` keeps
    Dagster's run and event storage in PostgreSQL, as production does (a fresh database per run).
    """
    runs: dict[str, list[dict[str, float]]] = {"without_checks": [], "with_checks": [], "floor": []}
    variants = (("without_checks", "0", "0"), ("with_checks", "1", "1"), ("floor", "floor", "1"))
    server = None
    if storage == "postgres":
        from pipelines_tests.services import _candidate_bin_dirs, start_postgres

        server = start_postgres(_candidate_bin_dirs()[0][1], durable=True)
    try:
        for attempt in range(repeats):
            for label, flag, profile in variants:
                runs[label].append(
                    _checks_run(days, scale, models, rows_per_day, flag, profile, server, attempt)
                )
    finally:
        if server is not None:
            from pipelines_tests.services import stop_postgres

            stop_postgres(server)
    return _checks_report(runs, repeats)


def _checks_run(
    days: int,
    scale: float,
    models: int | None,
    rows_per_day: int,
    flag: str,
    profile: str,
    server: Any,
    attempt: int,
) -> dict[str, float]:
    """One run of the check benchmark in a fresh deployment (and a fresh Dagster database)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DAGSTER_HOME": tmp,
            "PIPELINES_DATA_DIR": f"{tmp}/data",
            "PIPELINES_LAKE_URI": f"{tmp}/lake",
            "PIPELINES_DEMO_SCALE": str(scale),
            "PIPELINES_PROFILE": profile,
        }
        if models is not None:
            project = generate(Path(tmp) / "generated", models, rows_per_day=rows_per_day)
            env["SQLMESH_PROJECT_DIR"] = str(project)
        if server is not None:  # production's Dagster storage
            env.update(_postgres_env(server, f"bench_checks_{flag}_{attempt}"))
            (Path(tmp) / "dagster.yaml").write_text(POSTGRES_YAML)
        else:  # the instance users get: the repository's dagster.yaml
            (Path(tmp) / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        last = f"2026-03-{days:02d}"
        proc = subprocess.run(
            [sys.executable, "-c", CHECKS_RUN, "2026-03-01", last, flag]
            + (["bench"] if models is not None else []),
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _checks_report(runs: dict[str, list[dict[str, float]]], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": repeats}
    for label, results in runs.items():
        out[f"{label}_s"] = statistics.median(r["seconds"] for r in results)
        out[f"{label}_check_evaluations"] = results[0]["checks"]
        out[f"{label}_sqlmesh_step_s"] = statistics.median(r["sqlmesh_step_s"] for r in results)
        out[f"{label}_events"] = results[0]["events"]

    def overhead(label: str, base: str) -> tuple[float, list[float]]:
        # each triple ran back to back: the median of the ratios within a triple is what load
        # changes disturb least
        pairs = zip(runs[label], runs[base], strict=True)
        ratios = sorted(a["seconds"] / b["seconds"] - 1 for a, b in pairs)
        return statistics.median(ratios), [round(r, 4) for r in ratios]

    out["overhead"], out["overhead_per_pair"] = overhead("with_checks", "without_checks")
    # Dagster's floor: recording the same check results, computed by nothing
    out["floor_overhead"], out["floor_overhead_per_pair"] = overhead("floor", "without_checks")
    # our work on top of that floor (profiles, history, verdicts), as a share of the run without checks
    shares = sorted(
        (w["seconds"] - f["seconds"]) / wo["seconds"]
        for w, f, wo in zip(runs["with_checks"], runs["floor"], runs["without_checks"], strict=True)
    )
    out["our_work_share"] = statistics.median(shares)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant of the check benchmark")
    parser.add_argument(
        "--only", choices=["ingestion", "checks", "generated-checks"], help="run one of the benchmarks"
    )
    parser.add_argument("--models", type=int, default=100, help="models of the generated project")
    parser.add_argument("--rows-per-day", type=int, default=100_000, help="rows per generated model-day")
    parser.add_argument(
        "--dagster-storage",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="Dagster's storage in the check benchmarks: the local default, or PostgreSQL as in production",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {}
    if args.only in (None, "ingestion"):
        report["ingestion"] = bench_ingestion(args.scale)
    if args.only in (None, "checks"):
        report["checks"] = bench_checks(args.days, args.scale, args.repeats, storage=args.dagster_storage)
    if args.only in (None, "generated-checks"):
        report["generated_checks"] = bench_checks(
            args.days,
            args.scale,
            args.repeats,
            models=args.models,
            rows_per_day=args.rows_per_day,
            storage=args.dagster_storage,
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
