"""Minimal ``defs.yaml`` declarations just work: an omitted ``name`` is the defs folder's, so two
folders each declaring only ``project:`` load side by side (own jobs, resource and state key);
the same project declared twice under two key prefixes loads, with a warning saying what it does.

Loaded by Dagster's own ``load_from_defs_folder`` in a fresh process, as ``dg`` loads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipelines_tests.dg_projects import REPO, TeamProject, create_dagster_project
from pipelines_tests.sqlmesh_projects import write_init_style_project, write_project

LOAD = """\
import json, sys, warnings
from pathlib import Path

import dagster as dg

for root in sys.argv[1:]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            defs = dg.load_from_defs_folder(path_within_project=Path(root))
            repo = defs.get_repository_def()
            out = {
                "jobs": sorted(j.name for j in repo.get_all_jobs()),
                "resources": sorted(repo.get_top_level_resources()),
                "assets": sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()),
            }
        except Exception as exc:  # noqa: BLE001 - reported to the test, with what caused it
            causes = [exc]
            while causes[-1].__cause__ is not None:
                causes.append(causes[-1].__cause__)
            out = {"error": " <- ".join(str(e) for e in causes)}
    out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in seen]
    print("RESULT " + json.dumps(out))
"""

MINIMAL = "type: dagster_sqlmesh_bridge.SQLMeshProjectComponent\nattributes:\n  project: {project}\n"


def _load(*teams: TeamProject) -> list[dict]:
    paths = [str(t.package.parent) for t in teams] + [teams[0].env["PYTHONPATH"]]
    teams[0].env["PYTHONPATH"] = os.pathsep.join(paths)  # every team's package importable
    done = teams[0].python(LOAD, *(str(t.root) for t in teams))
    results = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and len(results) == len(teams), done.stdout[-3000:] + done.stderr[-3000:]
    return results


def _ours(warnings: list[str]) -> list[str]:
    wanted = ("DuplicateDefsStateKeyWarning", "SQLMeshProjectDeclaredTwiceWarning")
    return [w for w in warnings if w.startswith(wanted)]


def test_minimal_declarations_load_side_by_side_and_a_second_declaration_warns(tmp_path: Path) -> None:
    # two SQLMesh projects, each declared by a defs.yaml holding only `project:`
    two = create_dagster_project(tmp_path / "two", tmp_path / "platform")
    write_init_style_project(two.root / "sushi_project")
    write_project(two.root / "daily")
    two.declare("sushi", MINIMAL.format(project="../../../../sushi_project"))
    two.declare("daily", MINIMAL.format(project="../../../../daily/project"))
    # one SQLMesh project declared twice, under two key prefixes
    twice = create_dagster_project(tmp_path / "twice", tmp_path / "platform", module="twice")
    write_init_style_project(twice.root / "sushi_project")
    for folder in ("sushi", "sushi_copy"):
        twice.declare(
            folder,
            MINIMAL.format(project="../../../../sushi_project")
            + f"  translation: {{key_prefix: {folder}}}\n",
        )
    # an explicit `name: null`: unprefixed names, as this repository's shop declares itself
    unnamed = create_dagster_project(tmp_path / "unnamed", tmp_path / "platform", module="unnamed")
    write_init_style_project(unnamed.root / "sushi_project")
    unnamed.declare("sushi", MINIMAL.format(project="../../../../sushi_project") + "  name: null\n")

    side_by_side, declared_twice, unprefixed = _load(two, twice, unnamed)

    assert "error" not in side_by_side, side_by_side["error"]
    assert {"sushi_sqlmesh_plan", "daily_sqlmesh_plan"} <= set(side_by_side["jobs"])
    assert {"sqlmesh_sushi", "sqlmesh_daily"} <= set(side_by_side["resources"])
    assert {"demo/orders", "customer1/some_table", "demo/daily_totals"} <= set(side_by_side["assets"])
    assert _ours(side_by_side["warnings"]) == []  # each its own state key

    assert "error" not in declared_twice, declared_twice["error"]
    assert {"sushi/demo/orders", "sushi_copy/demo/orders"} <= set(declared_twice["assets"])
    (warning,) = _ours(declared_twice["warnings"])
    assert warning.startswith("SQLMeshProjectDeclaredTwiceWarning: SQLMesh project")
    assert "the same tables are now two sets of assets" in warning
    assert "defs/sushi " in warning and "defs/sushi_copy " in warning

    assert "error" not in unprefixed, unprefixed["error"]
    assert "sqlmesh_plan" in unprefixed["jobs"] and "sqlmesh" in unprefixed["resources"]


def test_the_readme_example_loads_as_written_in_create_dagsters_src_layout(tmp_path: Path) -> None:
    """README, "Use it in your own Dagster project": its defs.yaml, verbatim, at
    ``src/<module>/defs/sales/defs.yaml`` with the SQLMesh project at ``./sqlmesh_project``."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it in your own Dagster project", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    team = create_dagster_project(tmp_path / "team", tmp_path / "platform")
    write_init_style_project(team.root / "sqlmesh_project")
    team.declare("sales", example)
    team.env["SQLMESH_GATEWAY"] = "local"  # the example reads it with {{ env.SQLMESH_GATEWAY }}
    (loaded,) = _load(team)
    assert "error" not in loaded, loaded["error"]
    assert {"sales/demo/orders", "sales/customer1/some_table"} <= set(loaded["assets"])
    assert "sales_sqlmesh_plan" in loaded["jobs"]
