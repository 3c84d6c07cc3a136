"""A SQLMesh project loads and runs whatever a team's process imported or ran first.

``import sqlmesh`` extends sqlglot's dialects; a sqlglot generator that ran before it keeps a
dispatch table without SQLMesh's expressions (``dagster_sqlmesh_bridge/context_setup.py``),
and SQLMesh then failed on blueprint models: ``Unsupported expression type Model``. Each case
runs in a fresh process of a team's create-dagster project (this test process has imported
SQLMesh long ago, so it could not show the trap), with a blueprint model, a Python model, SQL
models, a seed and an external table, and materializes a 3-day range and the unpartitioned models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines_tests.dg_projects import TeamProject, create_dagster_project
from pipelines_tests.sqlmesh_projects import write_init_style_project

UNPARTITIONED = ["customer1/some_table", "customer2/some_table", "demo/waiter_names", "demo/waiter_count"]
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]

# what the team's process does before it loads its definitions, then the run of both selections
RUN = """\
import json, sys
from pathlib import Path

first, root = sys.argv[1], Path(sys.argv[2])
if first == "sqlglot":  # the team's own SQL, generated before anything else is imported
    import sqlglot

    sqlglot.parse_one("SELECT a FROM b WHERE c = 1").sql(dialect="duckdb")
    sqlglot.parse_one("SELECT 1").sql()
elif first == "integration":
    import dagster_sqlmesh_bridge.component.component  # noqa: F401
assert "sqlmesh" not in sys.modules, "the case needs SQLMesh imported after the first SQL"

import dagster as dg
from sqlglot.generator import _DISPATCH_CACHE

defs = dg.load_from_defs_folder(path_within_project=root)
graph = defs.resolve_asset_graph()
trap = sorted(cls.__name__ for cls in _DISPATCH_CACHE)  # generators built before SQLMesh
loaded_sqlmesh = "sqlmesh" in sys.modules
keys = {k.to_user_string(): k for k in graph.get_all_asset_keys()}
jobs = [
    dg.define_asset_job("range", selection=[keys["demo/orders"]]),
    dg.define_asset_job("whole", selection=[keys[k] for k in json.loads(sys.argv[3])]),
]
merged = dg.Definitions.merge(defs, dg.Definitions(jobs=jobs))
tags = {
    "dagster/asset_partition_range_start": "2026-01-01",
    "dagster/asset_partition_range_end": "2026-01-03",
}
out = {"trap": trap, "loaded_sqlmesh": loaded_sqlmesh, "runs": {}}
with dg.DagsterInstance.ephemeral() as instance:
    for name, run_tags in (("range", tags), ("whole", {})):
        result = merged.resolve_job_def(name).execute_in_process(
            instance=instance, tags=run_tags, raise_on_error=False
        )
        errors = []
        for event in result.all_events:
            error = event.event_specific_data.error if event.is_step_failure else None
            while error is not None:  # the step's error and what caused it
                errors.append(error.message.strip())
                error = error.cause
        done = sorted(
            f"{e.asset_key.to_user_string()}@{e.partition}" for e in result.get_asset_materialization_events()
        )
        out["runs"][name] = {"success": result.success, "errors": errors, "materialized": done}
print("RESULT " + json.dumps(out))
"""


def _team(tmp_path: Path) -> TeamProject:
    team = create_dagster_project(tmp_path / "team", tmp_path / "platform")
    write_init_style_project(team.root / "sqlmesh_project")
    # create-dagster's src/ layout: src/team/defs/sushi/defs.yaml is four folders below the root
    team.declare(
        "sushi",
        "type: dagster_sqlmesh_bridge.SQLMeshProjectComponent\n"
        "attributes:\n  project: ../../../../sqlmesh_project\n",
    )
    return team


def _bake(team: TeamProject) -> None:
    """The state a deployment bakes (``dg utils refresh-defs-state``), then no SQLMesh cache: a
    model SQLMesh finds in its cache is not rendered again, which hid the trap."""
    baked = team.dg("utils", "refresh-defs-state")
    assert baked.returncode == 0, baked.stdout[-3000:] + baked.stderr[-3000:]
    shutil.rmtree(team.root / "sqlmesh_project" / ".cache", ignore_errors=True)


def _result(done: object) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]  # type: ignore[attr-defined]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]  # type: ignore[attr-defined]
    return json.loads(lines[-1][len("RESULT ") :])


def _assert_everything_ran(result: dict) -> None:
    range_run, whole = result["runs"]["range"], result["runs"]["whole"]
    assert range_run["success"] and whole["success"], "\n".join(range_run["errors"] + whole["errors"])
    assert range_run["materialized"] == [f"demo/orders@{day}" for day in DAYS]
    assert whole["materialized"] == sorted(f"{key}@None" for key in UNPARTITIONED)


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("first", "state"),
    [
        ("sqlglot", "fresh"),  # a team's definitions.py generating SQL before anything else
        ("integration", "baked"),  # the integration first; its quality rules quote names at load
    ],
)
def test_a_fresh_process_runs_every_model_shape(tmp_path: Path, first: str, state: str) -> None:
    team = _team(tmp_path)
    if state == "baked":
        _bake(team)
    result = _result(team.python(RUN, first, str(team.root), json.dumps(UNPARTITIONED)))
    assert "DuckDBGenerator" in result["trap"], "the case no longer sets the trap it tests"
    assert result["loaded_sqlmesh"] is (state == "fresh")  # a baked state loads without SQLMesh
    _assert_everything_ran(result)


@pytest.mark.slow  # a baked state and two `dg launch` processes: minutes on a busy machine
@pytest.mark.timeout(1200)
def test_dg_launch_of_a_range_and_of_unpartitioned_models(tmp_path: Path) -> None:
    """The report's path: create-dagster's definitions.py, a baked state, ``dg launch``."""
    team = _team(tmp_path)
    _bake(team)
    ranged = team.dg("launch", "--assets", "demo/orders", "--partition-range", "2026-01-01...2026-01-03")
    assert ranged.returncode == 0, ranged.stdout[-3000:] + ranged.stderr[-5000:]
    whole = team.dg("launch", "--assets", ",".join(UNPARTITIONED))
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-5000:]
    assert "Unsupported expression type" not in ranged.stderr + whole.stderr
