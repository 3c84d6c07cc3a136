"""``pipelines run --select`` with no partitioned asset in the selection runs without a range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from pipelines_tests.conftest import Deployment

DIM = 'key:"marts/dim_customers"'


def test_a_selection_without_partitioned_assets_runs_unpartitioned(deployment: Deployment) -> None:
    # its own process, as an operator runs it (the CLI builds the definitions from the environment)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.ops.cli", "run", "--start", "2026-04-05", "--select", DIM],
        env=dict(os.environ), capture_output=True, text=True, timeout=600, cwd=deployment.root,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert (
        "no partitioned asset in the selection: one unpartitioned run, the days do not apply" in done.stdout
    )
    # a person's run restates, as SQLMesh does: the dimension and what reads it (fct_orders, and
    # daily_revenue built on it) are recomputed; nothing else
    assert "assets materialized: 3;" in done.stdout and "Partitions definition" not in done.stderr
    assert "restating downstream too, as SQLMesh does" in done.stdout + done.stderr
    warehouse = str(Path(os.environ["PIPELINES_DATA_DIR"]) / "warehouse.duckdb")
    with duckdb.connect(warehouse, read_only=True) as con:
        tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'marts'").fetchall()
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'marts'").fetchall()
    assert ("dim_customers",) in tables + views


def test_mixed_and_unpartitioned_selections_are_told_apart(deployment: Deployment) -> None:
    from dagster_sqlmesh_bridge.partition_runs import split_by_partitions
    from pipelines.definitions import defs
    from pipelines.ops import cli
    from pipelines.platform.partitions import DAILY

    graph = defs.resolve_asset_graph()

    def parts(selection: str) -> list[tuple[object, int]]:
        keys = cli._selection(selection).resolve(graph)
        return [(part.partitions_def, len(part.keys)) for part in split_by_partitions(graph, keys)]

    assert parts(DIM) == [(None, 1)]  # one unpartitioned run
    assert parts(f'{DIM} or key:"marts/daily_revenue"') == [(DAILY, 2)]  # one daily run: both
