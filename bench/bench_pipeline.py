"""Pipeline benchmarks, as ratios against a baseline measured in the same run.

    uv run python bench/bench_pipeline.py [--scale 20] [--days 3] [--repeats 3] [--only ingestion|checks]
        [--json out.json]

1. ingestion throughput (rows/s) of our validated, atomic partition write vs a bare DuckDB
   ``COPY ... TO`` of the same rows from the same source database to Parquet;
2. the cost of all checks (SQLMesh audits, profiles, anomaly/freshness/schema checks) relative
   to materialization: the demo pipeline with checks vs the same assets without them.
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

import duckdb

REPO = Path(__file__).resolve().parents[1]


def bench_ingestion(scale: float, repeats: int = 7) -> dict[str, float]:
    from pipelines.duckdb_extensions import install_extensions
    from pipelines.lake import Lake
    from pipelines.sources import demo
    from pipelines.sources.contracts import CONTRACTS
    from pipelines.sources.readers import attach_shop_database, database_query, ingest_database

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
start, end, with_checks = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
defs = build_definitions()
selection = dg.AssetSelection.all() if with_checks else dg.AssetSelection.all().without_checks()
job = dg.define_asset_job("bench", selection=selection)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("bench")
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
    elapsed = time.perf_counter() - t
assert result.success
checks = sum(1 for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
print(json.dumps({"seconds": elapsed, "checks": checks}))
"""


def bench_checks(days: int, scale: float, repeats: int = 3) -> dict[str, float]:
    """Same data, fresh deployments: materialize without checks vs with every check.

    The two variants alternate (A B A B ...) so that a change in machine load hits both alike;
    the overhead is the median of the ratios of adjacent pairs.
    """
    runs: dict[str, list[dict[str, float]]] = {"without_checks": [], "with_checks": []}
    for _ in range(repeats):
        for label, flag, profile in (("without_checks", "0", "0"), ("with_checks", "1", "1")):
            with tempfile.TemporaryDirectory() as tmp:
                env = {
                    **os.environ,
                    "DAGSTER_HOME": tmp,
                    "PIPELINES_DATA_DIR": f"{tmp}/data",
                    "PIPELINES_LAKE_URI": f"{tmp}/lake",
                    "PIPELINES_DEMO_SCALE": str(scale),
                    "PIPELINES_PROFILE": profile,
                }
                # the instance users get: the repository's dagster.yaml
                (Path(tmp) / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
                last = f"2026-03-{days:02d}"
                proc = subprocess.run(
                    [sys.executable, "-c", CHECKS_RUN, "2026-03-01", last, flag],
                    env=env,
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, float] = {}
    for label, results in runs.items():
        out[f"{label}_s"] = statistics.median(r["seconds"] for r in results)
        out[f"{label}_check_evaluations"] = results[0]["checks"]
    # each pair ran back to back: the median of the pairs' ratios is what load changes disturb least
    pairs = zip(runs["with_checks"], runs["without_checks"], strict=True)
    out["overhead"] = statistics.median(w["seconds"] / wo["seconds"] for w, wo in pairs) - 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant of the check benchmark")
    parser.add_argument("--only", choices=["ingestion", "checks"], help="run one of the two benchmarks")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {}
    if args.only in (None, "ingestion"):
        report["ingestion"] = bench_ingestion(args.scale)
    if args.only in (None, "checks"):
        report["checks"] = bench_checks(args.days, args.scale, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
