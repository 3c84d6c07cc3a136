"""A data file lost from S3 is detected and repaired on the prod stack (PostgreSQL catalog + S3).

The check names what is gone; ``pipelines repair-files`` rebuilds the damaged tables without
their lost files and restates exactly the lost days (with their downstream models, as SQLMesh
does). Afterwards the check passes and every mart equals an undisturbed reference.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.ops.cli import RANGE_END, RANGE_START
from pipelines.platform import maintenance, warehouse
from pipelines.platform.lake import Lake
from pipelines_tests.conftest import Deployment
from pipelines_tests.prod_env import mart_fingerprints

DAYS = ["2026-04-05", "2026-04-06", "2026-04-07"]


def _check(prod: Deployment) -> dg.ExecuteInProcessResult:
    job = prod.definitions().resolve_job_def("warehouse_file_check")
    return job.execute_in_process(instance=prod.instance, raise_on_error=False)


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pipelines <args>`` in its own process, as an operator runs it (its own Dagster home)."""
    home = tmp_path / "operator_home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.ops.cli", *args],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip


def _lose(lake: Lake, table_part: str, day: str | None) -> str:
    """Delete the data file of ``day`` (any, if None) of the physical table named ``table_part``."""
    with warehouse.warehouse() as con:
        files = maintenance.referenced_files(con)
    keys = [
        p.removeprefix(lake.uri + "/")
        for p, t in files.items()
        if table_part in t and (day is None or f"={day}/" in p)
    ]
    assert len(keys) == 1, keys
    lake.delete(keys[0])
    return keys[0]


@pytest.mark.slow
def test_lost_files_are_named_then_repaired_recomputing_only_the_lost_days(
    prod: Deployment, tmp_path: Path
) -> None:
    assert prod.run("*", start=DAYS[0], end=DAYS[-1]).success
    reference = mart_fingerprints()
    lake = Lake(os.environ["PIPELINES_LAKE_URI"])
    # a mart's file and an upstream incremental model's file, on different days, and the file
    # of a FULL model (no time column: SQLMesh's rebuild replaces its table whole)
    _lose(lake, "marts__daily_revenue__", DAYS[1])
    _lose(lake, "staging__stg_orders__", DAYS[2])
    _lose(lake, "marts__dim_customers__", None)

    check = _check(prod)
    assert not check.success
    failure = next(e for e in check.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error.message)
    assert f"marts.daily_revenue days {DAYS[1]}" in message
    assert f"staging.stg_orders days {DAYS[2]}" in message
    assert "marts.dim_customers whole table" in message and "repair-files" in message

    dry = _cli(tmp_path, "repair-files", "--dry-run")
    assert dry.returncode == 1, (dry.stdout[-3000:], dry.stderr[-3000:])
    assert "marts.daily_revenue (sqlmesh__marts.marts__daily_revenue__" in dry.stdout
    assert f"recompute {DAYS[1]}" in dry.stdout and f"recompute {DAYS[2]}" in dry.stdout
    # the runs a repair stopped midway needs are named before anything changes
    assert f"uv run pipelines run --start {DAYS[1]} --end {DAYS[1]} --select" in dry.stdout
    assert "marts.dim_customers" in dry.stdout and "whole table" in dry.stdout
    assert not _check(prod).success  # a dry run changes nothing

    fixed = _cli(tmp_path, "repair-files")
    print(fixed.stdout)
    assert fixed.returncode == 0, (fixed.stdout[-3000:], fixed.stderr[-3000:])
    assert "repair succeeded: 0 file(s) missing" in fixed.stdout
    # what each restatement run materialized: the lost day of the damaged model and of its
    # downstream models only (the report has no partitions)
    runs = fixed.stdout.split("recomputing ")[1:]
    by_run = [dict(re.findall(r"^  recomputed (\S+): (.+)$", run, re.MULTILINE)) for run in runs]
    assert by_run == [
        # first the FULL model (fct_orders joins it), alone: its partitioned descendants keep theirs
        {"marts/dim_customers": "-", "reports/shop_report": "-"},
        {"marts/daily_revenue": DAYS[1], "reports/shop_report": "-"},
        {
            "staging/stg_orders": DAYS[2],
            "intermediate/int_order_lines": DAYS[2],
            "marts/fct_orders": DAYS[2],
            "marts/daily_revenue": DAYS[2],
            "marts/category_sales": DAYS[2],
            "reports/shop_report": "-",
        },
    ], fixed.stdout
    # SQLMesh restated exactly those intervals (the bridge's log of each ranged run)
    restated = re.findall(r"restating (\d+) model\(s\) for \[(\S+) \S+, (\S+) \S+\)", fixed.stderr)
    assert restated[1:] == [("1", DAYS[1], DAYS[2]), ("5", DAYS[2], "2026-04-08")], restated
    assert restated[0][:2] == ("1", "1970-01-01")  # the FULL model: all of it, as SQLMesh rebuilds it

    assert _check(prod).success
    assert mart_fingerprints() == reference
    again = _cli(tmp_path, "repair-files", "--dry-run")
    assert again.returncode == 0 and "no data file missing" in again.stdout


# the fault: the repair's process dies after its rebuilds, before its first recompute run
_KILLED_BEFORE_RECOMPUTE = (
    "import os, sys\n"
    "import pipelines.ops.cli as cli\n"
    "cli._run_range = lambda *a, **k: os._exit(137)\n"
    "sys.exit(cli.main(['repair-files']))\n"
)


def _done_days(model: str) -> set[str]:
    """The days SQLMesh's state counts done for ``model`` (``schema.name``)."""
    from datetime import date, timedelta

    from sqlmesh.utils.date import to_ds

    from pipelines.ops.cli import _sqlmesh_resource

    ctx = _sqlmesh_resource().context()
    try:
        env = ctx.state_sync.get_environment("prod")
        schema, name = model.split(".")
        info = next(s for s in env.snapshots if s.name.endswith(f'"{schema}"."{name}"'))
        snapshot = ctx.state_sync.get_snapshots([info.snapshot_id])[info.snapshot_id]
        days = set()
        for start, end in snapshot.intervals:
            first, stop = date.fromisoformat(to_ds(start)), date.fromisoformat(to_ds(end))
            days |= {(first + timedelta(days=i)).isoformat() for i in range((stop - first).days)}
        return days
    finally:
        ctx.close()


@pytest.mark.slow
def test_a_repair_killed_after_its_rebuild_is_finished_by_a_plain_catch_up_run(
    prod: Deployment, tmp_path: Path
) -> None:
    assert prod.run("*", start=DAYS[0], end=DAYS[-1]).success
    reference = mart_fingerprints()
    lake = Lake(os.environ["PIPELINES_LAKE_URI"])
    _lose(lake, "marts__daily_revenue__", DAYS[1])
    _lose(lake, "staging__stg_orders__", DAYS[2])

    home = tmp_path / "operator_home"
    home.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BEFORE_RECOMPUTE],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    print(killed.stdout)
    assert killed.returncode == 137, (killed.stdout[-3000:], killed.stderr[-3000:])
    assert "rebuilt sqlmesh__staging.staging__stg_orders__" in killed.stdout
    # the lost days left SQLMesh's state before they left the tables: the model and its downstream
    assert f"SQLMesh state: not done, 1 model(s) for [{DAYS[1]}" in killed.stdout
    assert f"SQLMesh state: not done, 5 model(s) for [{DAYS[2]}" in killed.stdout
    assert _check(prod).success  # no lost file any more: the check cannot tell
    assert mart_fingerprints() != reference  # the lost days are out of the tables
    assert _done_days("marts.daily_revenue") == {DAYS[0]}
    assert _done_days("staging.stg_orders") == {DAYS[0], DAYS[1]}
    assert _done_days("marts.category_sales") == {DAYS[0], DAYS[1]}

    # a plain unattended run over the days (what the catch-up sensor launches: no restatement,
    # SQLMesh computes what its state says is not done) recomputes exactly the lost days
    job = prod.definitions().resolve_job_def("scheduled_daily")
    tags = {RANGE_START: DAYS[0], RANGE_END: DAYS[-1], "dagster/sensor_name": "catch_up"}
    result = job.execute_in_process(instance=prod.instance, tags=tags, raise_on_error=False)
    assert result.success
    computed = {
        e.asset_key.to_user_string(): e.materialization.metadata["sqlmesh/intervals"].value
        for e in result.get_asset_materialization_events()
        if "sqlmesh/intervals" in e.materialization.metadata
    }
    lost_chain = [[f"{DAYS[2]} 00:00", "2026-04-08 00:00"]]
    assert computed == {  # exactly what the state marked not done; nothing of DAYS[0]
        "marts/daily_revenue": [[f"{DAYS[1]} 00:00", "2026-04-08 00:00"]],
        "staging/stg_orders": lost_chain,
        "intermediate/int_order_lines": lost_chain,
        "marts/fct_orders": lost_chain,
        "marts/category_sales": lost_chain,
    }, computed
    assert mart_fingerprints() == reference
    for model in ("marts.daily_revenue", "staging.stg_orders", "marts.category_sales"):
        assert _done_days(model) == set(DAYS)
