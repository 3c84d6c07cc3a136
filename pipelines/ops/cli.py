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
from typing import TYPE_CHECKING, Any

from dagster_sqlmesh_bridge.assets import RESTATE_DOWNSTREAM_TAG
from dagster_sqlmesh_bridge.identifiers import safe_identifier, safe_partition_key

if TYPE_CHECKING:
    import dagster as dg

    from dagster_sqlmesh_bridge import ProjectInfo
    from dagster_sqlmesh_bridge.resource import SQLMeshResource
    from pipelines.platform.repair import TableDamage
    from pipelines.platform.settings import Settings

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


# Dagster's event-write knobs as this project sets them (issue 27; measured and chosen in
# docs/benchmarks.md): a ranged output's materializations are handed to the storage as one batch
# (one INSERT on PostgreSQL). DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS stays unset: with
# it, partitions of a failed run are no longer shown as failed. The Dockerfile and
# helm-values.yaml set the same; pipelines_tests/test_dagster_event_knobs.py holds all three.
DAGSTER_EVENT_ENV = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}


def _dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to the repository root (wherever in it the command started), whose
    ``dagster.yaml`` configures the instance; set for child processes too (``pipelines ui``),
    with Dagster's event-write knobs unless the environment sets them."""
    from pipelines.platform.settings import local_path, local_root

    home = local_path(os.environ.get("DAGSTER_HOME", "").strip() or local_root())
    os.environ["DAGSTER_HOME"] = str(home)
    for name, value in DAGSTER_EVENT_ENV.items():
        os.environ.setdefault(name, value)
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

    lock_path = _dagster_home() / ".instance-init.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance


def _selection(text: str | dg.AssetSelection) -> dg.AssetSelection:
    import warnings

    import dagster as dg

    if isinstance(text, dg.AssetSelection):
        return text
    if text == "*":
        return dg.AssetSelection.all()
    with warnings.catch_warnings():
        # Dagster's own selection parser passes its beta parameter `include_sources` to
        # AssetSelection.all for "*" terms: a warning about Dagster's internals, not this call.
        warnings.filterwarnings("ignore", r"Parameter `include_sources`", dg.BetaWarning)
        return dg.AssetSelection.from_string(text)


def run_range(start: str, end: str, selection: str = "*", include_checks: bool = True) -> bool:
    return all(r.success for r in _run_range(start, end, selection, include_checks))


def _run_range(
    start: str | None,
    end: str | None,
    selection: str | dg.AssetSelection = "*",
    include_checks: bool = True,
    tags: dict[str, str] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Materialize ``selection`` for the days [start, end]: one Dagster run per partitions
    definition (``dagster_sqlmesh_bridge.partition_runs``; the bundled shop is all daily: one run), each for
    its own partitions inside those days, in dependency order; stops at the first failed run.
    Unpartitioned assets alone run once without a range (``start`` may then be None)."""
    import dagster as dg

    from dagster_sqlmesh_bridge.partition_runs import keys_within_days, split_by_partitions
    from pipelines.definitions import defs

    chosen = _selection(selection)
    graph = defs.resolve_asset_graph()
    keys = [k for k in chosen.resolve(graph) if graph.get(k).is_materializable]
    parts = split_by_partitions(graph, keys)
    if (start is None or end is None) and any(part.partitions_def is not None for part in parts):
        raise ValueError("a selection with partitioned assets needs --start and --end")
    owner = {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}
    results = []
    with _open_instance() as instance:
        for run_id in reclaim_dead_runs(instance):
            print(f"run {run_id} died with its process: marked failed, its pool slots freed")
        for index, part in enumerate(parts):
            # one part: the selection as given (its checks too), exactly as before the split
            what = chosen if len(parts) == 1 else dg.AssetSelection.assets(*part.keys)
            name = "demo_run" if len(parts) == 1 else f"demo_run_{index + 1}"
            job_def = dg.define_asset_job(name, selection=what if include_checks else what.without_checks())
            run_tags = {**owner, **(tags or {})}
            if part.partitions_def is None and len(parts) == 1 and start is not None:
                print("  no partitioned asset in the selection: one unpartitioned run, the days do not apply")
            if part.partitions_def is not None:
                span = keys_within_days(
                    part.partitions_def, date.fromisoformat(start), date.fromisoformat(end)
                )
                if not span:
                    print(
                        f"{len(part.keys)} asset(s) have no whole partition inside {start} .. {end}: skipped"
                    )
                    continue
                run_tags.update({RANGE_START: span[0], RANGE_END: span[-1]})
            resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job_def])).resolve_job_def(name)
            result = resolved.execute_in_process(
                instance=instance,
                tags=run_tags,
                run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
                raise_on_error=False,
            )
            results.append(result)
            if not result.success:
                break
    return results


def _summary(results: list[dg.ExecuteInProcessResult]) -> tuple[bool, list[Any], list[str], set[Any]]:
    """Whether every run succeeded, their check evaluations, the failed checks' names, and the
    assets they materialized."""
    checks = [
        e.event_specific_data
        for r in results
        for e in r.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed = sorted(f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed)
    assets = {e.asset_key for r in results for e in r.get_asset_materialization_events()}
    return bool(results) and all(r.success for r in results), checks, failed, assets


def gateway_location(project_dir: Path, gateway: str | None) -> str:
    """Where a project's own SQLMesh gateway keeps its tables, as the runs open it: a relative
    DuckDB file is the project folder's, as ``sqlmesh`` run in that folder opens it
    (``dagster_sqlmesh_bridge/context_setup.py``), wherever this command was started. A catalog
    that is not a local file is named by type only (its path may hold a password)."""
    from dagster_sqlmesh_bridge.component.quality import gateway_connection

    connection = gateway_connection(str(project_dir), gateway)
    kind = str(getattr(connection, "type_", "unknown"))
    if kind != "duckdb":
        return f"{kind} (gateway {gateway or 'default'})"
    places = []
    database = getattr(connection, "database", None)
    if database and database != ":memory:":
        places.append(str(Path(database).resolve()))
    for name, catalog in (getattr(connection, "catalogs", None) or {}).items():
        path = catalog if isinstance(catalog, str) else catalog.path
        local = path != ":memory:" and ":" not in path.split("/", 1)[0]
        if local:
            places.append(f"{name}: {Path(path).resolve()}")
        else:
            places.append(f"{name}: {getattr(catalog, 'type', 'duckdb')} catalog")
    return ", ".join(places) or "in memory (nothing is kept)"


def data_locations(settings: Settings) -> list[tuple[str, str]]:
    """Where a run's results are, for the stack the environment names: the lake (S3 or a
    folder) and the warehouse (DuckLake's catalog and data files in prod, a DuckDB file locally;
    another project's own gateway when it is not the bundled shop, which alone has the report)."""
    lake = ("lake (raw Parquet, quarantine)", settings.lake_uri)
    report = ("report", f"{settings.lake_uri}/reports/shop_report.html")
    if settings.env == "prod":
        from pipelines.platform.postgres import ducklake_catalog_params

        catalog = ducklake_catalog_params().describe()
        data = settings.lake_uri.rstrip("/") + "/warehouse/"
        return [lake, ("warehouse (DuckLake catalog)", catalog), ("warehouse data files", data), report]
    if not settings.bundled_project:
        where = gateway_location(settings.sqlmesh_project_dir, settings.sqlmesh_gateway)
        return [lake, ("warehouse (project gateway)", where)]
    from pipelines.platform import warehouse

    return [lake, ("warehouse (DuckDB)", warehouse.warehouse_path(settings)), report]


def _day_range(args: argparse.Namespace) -> tuple[str, str] | None:
    end = safe_partition_key(args.end or (date.today() - timedelta(days=1)).isoformat())
    start = safe_partition_key(
        args.start or (date.fromisoformat(end) - timedelta(days=args.days - 1)).isoformat()
    )
    if start > end:
        print(f"start {start} is after end {end}", file=sys.stderr)
        return None
    return start, end


def run(args: argparse.Namespace) -> int:
    """An operator's range run on whatever stack the environment names: one Dagster run per
    partitions definition of the selection (one for the bundled shop, all daily) on the instance
    of DAGSTER_HOME (visible in the UI), each covering the days as one single-run backfill,
    exactly as ``demo`` and the UI's backfill of a range run it."""
    home = _dagster_home()
    days = _day_range(args)
    if days is None:
        return 2
    start, end = days
    from pipelines.platform.settings import Settings

    settings = Settings.from_env()
    print(f"Running {args.select!r} for {start} .. {end} on {settings.env} (DAGSTER_HOME={home})")
    results = _run_range(start, end, args.select, include_checks=not args.no_checks)
    ok, checks, failed, assets = _summary(results)
    for result in results:
        print(
            f"\nRun {result.run_id}: "
            + ("succeeded" if result.success else "FAILED (read its logs in the UI)")
        )
    print(f"  assets materialized: {len(assets)}; checks run: {len(checks)}, failed: {len(failed)}")
    for name in failed:
        print(f"    failed check: {name}")
    for label, where in data_locations(settings):
        print(f"  {label + ':':<32}{where}")
    return 0 if ok else 1


def _unpartitioned(defs: dg.Definitions, key: dg.AssetKey) -> bool:
    """Whether ``key``'s own spec has no partitions (a multi-asset mixes both)."""
    return all(s.partitions_def is None for s in defs.resolve_assets_def(key).specs if s.key == key)


def _repair_runs(
    damage: list[TableDamage], project: ProjectInfo
) -> list[tuple[str | None, str | None, str, str]]:
    """(start, end, selection, command) of each run recomputing ``damage``: the damaged models
    and their downstream assets (only the unpartitioned ones for an unranged run)."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.platform import repair

    graph = defs.resolve_asset_graph()
    runs = []
    for days, models in repair.restatements(damage, project):
        chosen = dg.AssetSelection.assets(*(dg.AssetKey(m.split(".")) for m in models))
        keys = chosen.downstream().resolve(graph)
        if days is None:  # an unpartitioned run: its partitioned descendants keep their data
            keys = {k for k in keys if _unpartitioned(defs, k)}
        selection = repair.selection_string(k.to_user_string() for k in keys)
        if days is None:  # the FULL model's file is still lost until its run: repair-files retries
            runs.append((None, None, selection, "uv run pipelines repair-files"))
            continue
        start, end = days.first.isoformat(), days.last.isoformat()
        command = f"uv run pipelines run --start {start} --end {end} --select '{selection}'"
        runs.append((start, end, selection, command))
    return runs


class _PrintLog:
    """A log for code that takes Dagster's: prints, as the CLI reports."""

    def info(self, message: str) -> None:
        print(f"  {message}")

    def debug(self, message: str, *args: object) -> None:
        pass


def _sqlmesh_resource() -> SQLMeshResource:
    """The SQLMesh resource the code location runs with (its project paths, gateway, lock)."""
    from dagster_sqlmesh_bridge.resource import SQLMeshResource
    from pipelines.platform.configured_project import settings_from_env
    from pipelines.platform.resources import build_resources

    settings, dirs = settings_from_env()
    base = build_resources(settings)["sqlmesh"]
    assert isinstance(base, SQLMeshResource)
    return SQLMeshResource(
        project_dir=str(dirs[0]),
        extra_project_dirs=[str(d) for d in dirs[1:]],
        gateway=base.gateway,
        environment=base.environment,
        lock_file=base.lock_file,
    )


def repair_files(args: argparse.Namespace) -> int:
    """Find the warehouse's data files lost from the lake, rebuild their tables without them and
    recompute exactly the lost days (pipelines/platform/repair.py); ``--dry-run`` only reports."""
    import time

    from pipelines.platform import maintenance, repair, warehouse
    from pipelines.platform.configured_project import load_configured_project
    from pipelines.platform.lake import Lake
    from pipelines.platform.settings import Settings

    settings = Settings.from_env()
    if settings.env != "prod":
        print("local DuckDB warehouse: no object store to compare with, nothing to repair")
        return 0
    wanted = set(args.select or [])
    for name in wanted:
        for part in name.split("."):
            safe_identifier(part, "model name")
    lake = Lake(settings.lake_uri)
    project = load_configured_project()
    try:
        with warehouse.warehouse(settings, read_only=False) as con:
            outside = maintenance.unplaceable_files(con, lake)
            if outside:
                print(f"{len(outside)} file(s) outside the lake root {lake.uri}, not checked (not missing):")
                for path, table in sorted(outside.items()):
                    print(f"  unplaceable: {table}: {path}")
            found = repair.find_damage(con, lake, project)
            damage = [d for d in found if not wanted or d.model in wanted]
            if not damage:
                others = len(found) - len(damage)
                note = f" in the selection ({others} other table(s))" if others else ""
                print("no data file missing" + note)
                return 0
            print(f"{len(damage)} table(s) with data files missing from {lake.uri}:")
            for d in damage:
                print(f"  {d.describe()}")
                for path in d.files:
                    print(f"    lost: {path}")
            runs = _repair_runs(damage, project)
            # printed before anything changes: after a rebuild the lost days are out of the
            # table and no check finds them again, so a repair stopped midway is finished by these
            print("recompute runs (rerun any that does not report success):")
            for *_, command in runs:
                print(f"  {command}")
            if args.dry_run:
                return 1
            # the lost days leave SQLMesh's "done" intervals before they leave the tables: if this
            # process dies after a rebuild, any later run covering them recomputes them
            with _sqlmesh_resource().intervals_not_done(
                repair.windows_not_done(damage, project), _PrintLog()
            ):
                for d in damage:
                    if not d.time_column:
                        continue  # SQLMesh's rebuild of the model replaces the table whole
                    began = time.monotonic()
                    kept = repair.rebuild(con, d)
                    took = time.monotonic() - began
                    print(f"rebuilt {d.table} without its lost files: {kept} row(s) kept in {took:.2f} s")
    except RuntimeError as exc:  # repair.RepairError, or SQLMesh's environment lacks a model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    for start, end, selection, command in runs:
        print(f"recomputing {f'{start} .. {end}' if start else 'all'} of {selection}")
        began = time.monotonic()
        # exactly what the repair marked not done: the selection names the downstream it needs
        results = _run_range(start, end, selection, tags={RESTATE_DOWNSTREAM_TAG: "false"})
        done: dict[str, set[str]] = {}
        for result in results:
            for event in result.get_asset_materialization_events():
                done.setdefault(event.asset_key.to_user_string(), set()).add(event.partition or "-")
        for key, partitions in sorted(done.items()):
            print(f"  recomputed {key}: {', '.join(sorted(partitions))}")
        for result in results:
            outcome = "succeeded" if result.success else "FAILED"
            print(f"  run {result.run_id}: {outcome} in {time.monotonic() - began:.1f} s")
        if not results or not all(result.success for result in results):
            ok = False
            print(f"  the lost data is not recomputed: read the run's logs, then run {command}")
    with warehouse.warehouse(settings) as con:
        left = maintenance.missing_files(con, lake)
    print("repair " + ("succeeded" if ok and not left else "INCOMPLETE") + f": {len(left)} file(s) missing")
    return 0 if ok and not left else 1


def demo(args: argparse.Namespace) -> int:
    home = _dagster_home()
    days = _day_range(args)
    if days is None:
        return 2
    start, end = days
    from pipelines.platform.settings import Settings

    settings = Settings.from_env()
    print(f"Running ingestion + SQLMesh models + checks for {start} .. {end} (DAGSTER_HOME={home})")
    ok, checks, failed, assets = _summary(_run_range(start, end))
    from pipelines.platform import warehouse

    print("\nResults")
    for label, where in data_locations(settings):
        print(f"  {label + ':':<32}{where}")
    if ok:
        with warehouse.warehouse(settings) as con:
            rows = con.execute(
                "SELECT order_date, orders, revenue_usd FROM marts.daily_revenue "
                "WHERE order_date BETWEEN ? AND ? ORDER BY 1",
                [start, end],
            ).fetchall()
        for day, orders, revenue in rows:
            print(f"    {day}: {orders} orders, {revenue:,.2f} USD")
    print(f"  assets materialized: {len(assets)}; checks run: {len(checks)}, failed: {len(failed)}")
    for name in failed:
        print(f"    failed check: {name}")
    print("  UI:                             uv run pipelines ui   (then http://127.0.0.1:3000)")
    print("Run " + ("succeeded" if ok else "FAILED: open the UI to read the failing step's logs"))
    return 0 if ok else 1


def ui_command(host: str, port: int) -> tuple[list[str], Path]:
    """``dg dev`` and the folder it runs in: the repository root (its workspace.yaml and dg
    project), wherever ``pipelines ui`` was started. ``dg dev``, not ``dagster dev``: Dagster
    marks the latter superseded and warns about it on every start."""
    from pipelines.platform.settings import local_root

    root = local_root()
    dg_cli = Path(sys.executable).with_name("dg")
    workspace = ["-w", str(root / "workspace.yaml")] if (root / "workspace.yaml").is_file() else []
    cmd = [str(dg_cli) if dg_cli.exists() else "dg", "dev", *workspace, "-h", host, "-p", str(port)]
    return cmd, root


def ui(args: argparse.Namespace) -> int:
    import subprocess

    _dagster_home()
    cmd, root = ui_command(args.host, args.port)
    return subprocess.call(cmd, cwd=root)


def releases(args: argparse.Namespace) -> int:
    """Release records of applied SQLMesh plans (``pipelines/component/releases.py``), newest first."""
    from pipelines.component.releases import format_releases, list_releases
    from pipelines.platform.lake import Lake
    from pipelines.platform.settings import Settings

    lake = Lake(Settings.from_env().lake_uri)
    print(format_releases(list_releases(lake, limit=args.limit), lake))
    return 0


def plan_check(args: argparse.Namespace) -> int:
    from pipelines.ops.plan_check import main as plan_check_main

    return plan_check_main(args)


def bootstrap_db(args: argparse.Namespace) -> int:
    """Create the metadata databases and roles (pipelines/platform/bootstrap.py); names only are printed."""
    import json

    from pipelines.platform.bootstrap import BootstrapError, BootstrapPlan, bootstrap

    try:
        report = bootstrap(BootstrapPlan.from_env())
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


def fill_values(args: argparse.Namespace) -> int:
    """Fill helm-values.yaml's <PLACEHOLDER>s from the CDK stack's outputs (pipelines/ops/helm_fill.py)."""
    from pipelines.ops.helm_fill import FillError, fill_file, parse_sets

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


def build_parser() -> argparse.ArgumentParser:
    """The ``pipelines`` command line; file defaults are the repository root's."""
    from pipelines.platform.settings import local_root

    parser = argparse.ArgumentParser(prog="pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the pipeline end to end on the embedded default")
    p_demo.add_argument("--start", help="first day (YYYY-MM-DD)")
    p_demo.add_argument("--end", help="last day (YYYY-MM-DD), default yesterday")
    p_demo.add_argument("--days", type=int, default=3, help="days to run when --start is not given")
    p_demo.set_defaults(func=demo)
    p_run = sub.add_parser(
        "run", help="run a date range of a selection on the stack the environment names (local or prod)"
    )
    p_run.add_argument("--start", help="first day (YYYY-MM-DD)")
    p_run.add_argument("--end", help="last day (YYYY-MM-DD), default yesterday")
    p_run.add_argument("--days", type=int, default=1, help="days to run when --start is not given")
    p_run.add_argument(
        "--select", default="*", help="Dagster asset selection, e.g. 'key:marts/*' or '+marts/daily_revenue'"
    )
    p_run.add_argument("--no-checks", action="store_true", help="materialize without the asset checks")
    p_run.set_defaults(func=run)
    p_repair = sub.add_parser(
        "repair-files",
        help="rebuild warehouse tables whose data files are lost from the lake, recompute the lost days",
    )
    p_repair.add_argument(
        "--select", action="append", metavar="SCHEMA.MODEL", help="only this model's table (repeatable)"
    )
    p_repair.add_argument("--dry-run", action="store_true", help="report what is lost; exit 1 if anything")
    p_repair.set_defaults(func=repair_files)
    p_ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    p_ui.add_argument("--host", default="127.0.0.1")
    p_ui.add_argument("--port", type=int, default=3000)
    p_ui.set_defaults(func=ui)
    p_rel = sub.add_parser("releases", help="list the SQLMesh plans applied (release records), newest first")
    p_rel.add_argument("--limit", type=int, default=20, help="how many releases to show")
    p_rel.set_defaults(func=releases)
    from pipelines.ops.plan_check import add_arguments

    p_check = sub.add_parser(
        "plan-check",
        help="plan the working tree into its branch's SQLMesh environment and diff it against prod",
    )
    add_arguments(p_check)
    p_check.set_defaults(func=plan_check)

    p_boot = sub.add_parser("bootstrap-db", help="create the metadata databases and roles (idempotent)")
    p_boot.set_defaults(func=bootstrap_db)
    p_fill = sub.add_parser("fill-values", help="fill helm-values.yaml placeholders from the stack outputs")
    p_fill.add_argument("--outputs", required=True, help="cdk deploy --outputs-file JSON")
    # defaults in the repository root, wherever this runs; paths given are the shell's, as usual
    root = local_root()
    p_fill.add_argument("--values", default=str(root / "helm-values.yaml"), help="file with <PLACEHOLDER>s")
    p_fill.add_argument(
        "--out", default=str(root / "values.prod.yaml"), help="new file to write (keep it out of git)"
    )
    p_fill.add_argument("--image-tag", default="", help="fills <IMAGE_TAG>")
    p_fill.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="fills <NAME>")
    p_fill.add_argument("--stack", default=None, help="stack name in the outputs file (if several)")
    p_fill.set_defaults(func=fill_values)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
