"""``pipelines``: the quick-start commands.

``pipelines demo`` ingests the demo sources for a recent date range, builds every SQLMesh
model for those days and runs the checks, through Dagster (the runs show in the UI), then
prints where the results are. ``pipelines ui`` opens the Dagster UI on the same instance.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.identifiers import safe_partition_key

if TYPE_CHECKING:
    import dagster as dg

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _dagster_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd()))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


OWNER_HOST, OWNER_PID = "pipelines/host", "pipelines/pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs of this machine whose process was killed (no daemon watches in-process runs) keep
    their status and their pool slots forever; mark them failed and free the slots."""
    import dagster as dg

    host = socket.gethostname()
    active = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    reclaimed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=active, tags={OWNER_HOST: host})):
        pid = run.tags.get(OWNER_PID, "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        instance.report_run_failed(run, "the process running it died (killed or crashed)")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reclaimed.append(run.run_id)
    return reclaimed


@contextmanager
def _open_instance() -> Iterator[dg.DagsterInstance]:
    """The DAGSTER_HOME instance; its first creation (SQLite schema migration) is serialised
    across processes, which otherwise race on a fresh home ('UNIQUE constraint failed')."""
    import fcntl

    import dagster as dg

    lock_path = Path(os.environ["DAGSTER_HOME"]) / ".instance-init.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance


def run_range(start: str, end: str, selection: str = "*", include_checks: bool = True) -> bool:
    return _run_range(start, end, selection, include_checks).success


def _run_range(
    start: str, end: str, selection: str = "*", include_checks: bool = True
) -> dg.ExecuteInProcessResult:
    """Materialize ``selection`` for the partition range [start, end] in one Dagster run."""
    import dagster as dg

    from pipelines.definitions import defs

    chosen = dg.AssetSelection.from_string(selection)
    job_def = dg.define_asset_job("demo_run", selection=chosen if include_checks else chosen.without_checks())
    owner = {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job_def])).resolve_job_def("demo_run")
    with _open_instance() as instance:
        for run_id in reclaim_dead_runs(instance):
            print(f"run {run_id} died with its process: marked failed, its pool slots freed")
        return resolved.execute_in_process(
            instance=instance,
            tags={RANGE_START: start, RANGE_END: end, **owner},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )


def demo(args: argparse.Namespace) -> int:
    home = _dagster_home()
    end = safe_partition_key(args.end or (date.today() - timedelta(days=1)).isoformat())
    start = safe_partition_key(
        args.start or (date.fromisoformat(end) - timedelta(days=args.days - 1)).isoformat()
    )
    if start > end:
        print(f"start {start} is after end {end}", file=sys.stderr)
        return 2
    from pipelines.settings import Settings

    settings = Settings.from_env()
    print(f"Running ingestion + SQLMesh models + checks for {start} .. {end} (DAGSTER_HOME={home})")
    result = _run_range(start, end)
    ok = result.success
    from pipelines import warehouse

    checks = [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed = sorted(f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed)
    assets = {e.asset_key for e in result.get_asset_materialization_events()}

    print("\nResults")
    print(f"  lake (raw Parquet, quarantine): {settings.lake_uri}")
    print(f"  warehouse (DuckDB):             {warehouse.warehouse_path(settings)}")
    if ok:
        with warehouse.warehouse(settings) as con:
            rows = con.execute(
                "SELECT order_date, orders, revenue_usd FROM marts.daily_revenue "
                "WHERE order_date BETWEEN ? AND ? ORDER BY 1",
                [start, end],
            ).fetchall()
        for day, orders, revenue in rows:
            print(f"    {day}: {orders} orders, {revenue:,.2f} USD")
    print(f"  report:                         {settings.lake_uri}/reports/shop_report.html")
    print(f"  assets materialized: {len(assets)}; checks run: {len(checks)}, failed: {len(failed)}")
    for name in failed:
        print(f"    failed check: {name}")
    print("  UI:                             uv run pipelines ui   (then http://127.0.0.1:3000)")
    print("Run " + ("succeeded" if ok else "FAILED: open the UI to read the failing step's logs"))
    return 0 if ok else 1


def ui(args: argparse.Namespace) -> int:
    _dagster_home()
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        "workspace.yaml",
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    import subprocess

    return subprocess.call(cmd)


def bootstrap_db(args: argparse.Namespace) -> int:
    """Create the metadata databases and roles (pipelines/bootstrap.py); names only are printed."""
    import json

    from pipelines.bootstrap import BootstrapError, BootstrapPlan, bootstrap

    try:
        report = bootstrap(BootstrapPlan.from_env())
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def fill_values(args: argparse.Namespace) -> int:
    """Fill helm-values.yaml's <PLACEHOLDER>s from the CDK stack's outputs (pipelines/helm_fill.py)."""
    from pipelines.helm_fill import FillError, fill_file, parse_sets

    try:
        extra = parse_sets(args.set)
        if args.image_tag:
            extra["IMAGE_TAG"] = args.image_tag
        out = fill_file(Path(args.outputs), Path(args.out), Path(args.values), extra, args.stack)
    except FillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the pipeline end to end on the embedded default")
    p_demo.add_argument("--start", help="first day (YYYY-MM-DD)")
    p_demo.add_argument("--end", help="last day (YYYY-MM-DD), default yesterday")
    p_demo.add_argument("--days", type=int, default=3, help="days to run when --start is not given")
    p_demo.set_defaults(func=demo)
    p_ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    p_ui.add_argument("--host", default="127.0.0.1")
    p_ui.add_argument("--port", type=int, default=3000)
    p_ui.set_defaults(func=ui)
    p_boot = sub.add_parser("bootstrap-db", help="create the metadata databases and roles (idempotent)")
    p_boot.set_defaults(func=bootstrap_db)
    p_fill = sub.add_parser("fill-values", help="fill helm-values.yaml placeholders from the stack outputs")
    p_fill.add_argument("--outputs", required=True, help="cdk deploy --outputs-file JSON")
    p_fill.add_argument("--values", default="helm-values.yaml", help="file with <PLACEHOLDER>s")
    p_fill.add_argument("--out", default="values.prod.yaml", help="new file to write (keep it out of git)")
    p_fill.add_argument("--image-tag", default="", help="fills <IMAGE_TAG>")
    p_fill.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="fills <NAME>")
    p_fill.add_argument("--stack", default=None, help="stack name in the outputs file (if several)")
    p_fill.set_defaults(func=fill_values)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
