"""Scale: the demo with >= 10M fact rows (order lines), then one daily incremental on this machine.

    uv run python bench/bench_scale.py [--scale 500] [--days 43] [--json out.json]

History is built through the pipeline itself (one single-run backfill of the fact sources and
every model); the daily incremental then runs every asset for the next day in a fresh process,
whose wall time and peak RSS are reported next to the backfill's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUN = """
import json, resource, sys, time
import dagster as dg
from pipelines.definitions import build_definitions
start, end, selection = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
defs = build_definitions()
graph = defs.resolve_asset_graph()
if selection == "*":
    sel = dg.AssetSelection.all()
else:
    sel = dg.AssetSelection.assets(*[dg.AssetKey(k.split("/")) for k in selection])
job = dg.define_asset_job("scale", selection=sel)
job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("scale")
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    elapsed = time.perf_counter() - t
assert result.success
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_rss_mib": rss}))
"""

HISTORY_SOURCES = ["raw/orders", "raw/order_items", "raw/fx_rates"]


def run(env: dict[str, str], start: str, end: str, selection: object) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", RUN, start, end, json.dumps(selection)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-5000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=500)
    parser.add_argument("--days", type=int, default=43)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    first = date(2026, 3, 1)
    last = first + timedelta(days=args.days - 1)
    nxt = last + timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "DAGSTER_HOME": tmp,
            "PIPELINES_DATA_DIR": f"{tmp}/data",
            "PIPELINES_LAKE_URI": f"{tmp}/lake",
            "PIPELINES_DEMO_SCALE": str(args.scale),
        }
        (Path(tmp) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # dimensions and clickstream once (their latest snapshot is what the models read)
        run(env, last.isoformat(), last.isoformat(), ["raw/customers", "raw/products", "raw/web_events"])
        ingest = run(env, first.isoformat(), last.isoformat(), HISTORY_SOURCES)
        models = [
            f"{schema}/{p.stem}"
            for schema in ("staging", "intermediate", "marts")
            for p in (REPO / "pipelines/shop/sqlmesh_project/models" / schema).glob("*.sql")
        ]
        backfill = run(env, first.isoformat(), last.isoformat(), models)
        import duckdb

        con = duckdb.connect(f"{tmp}/data/warehouse.duckdb", read_only=True)
        fact_rows = con.execute("SELECT count(*) FROM intermediate.int_order_lines").fetchone()[0]
        con.close()
        daily = run(env, nxt.isoformat(), nxt.isoformat(), "*")
    report = {
        "scale": args.scale,
        "history_days": args.days,
        "fact_rows_after_backfill": fact_rows,
        "history_ingestion": ingest,
        "history_models_backfill": backfill,
        "daily_incremental_all_assets": daily,
        "daily_vs_backfill": daily["seconds"] / backfill["seconds"],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
