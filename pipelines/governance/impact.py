"""Impact analysis: which model columns and reports change if a source column changes.

Answers "what breaks if the shop renames ``customers.segment``?" or "where does ``email`` end
up?" from SQLMesh column lineage, before anyone touches the source::

    python -m pipelines.governance.impact raw.customers.email
    python -m pipelines.governance.impact orders.customer_id --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from pipelines.governance.classification import RAW_SCHEMA, ColumnGraph, ColumnRef, display, short_name


def _default_reports() -> dict[dg.AssetKey, list[dg.AssetKey]]:
    from pipelines.shop.report_assets import MART_DEPS, REPORT_ASSET_KEY

    return {REPORT_ASSET_KEY: list(MART_DEPS)}


def find_model(project: ProjectInfo, name: str) -> ModelInfo:
    """A model by ``schema.table``, ``catalog.schema.table``, its fqn, or a bare source name."""
    if name in project.models:
        return project.models[name]
    parts = [p.strip('"') for p in name.split(".")]
    if len(parts) == 1:
        parts = [RAW_SCHEMA, parts[0]]
    wanted = ".".join(parts[-2:])
    matches = [m for m in project.models.values() if short_name(m) == wanted]
    if len(parts) == 3:
        matches = [m for m in matches if m.catalog == parts[0]]
    if len(matches) != 1:
        raise KeyError(f"no model named {name!r}" if not matches else f"{name!r} is ambiguous")
    return matches[0]


def parse_column_ref(project: ProjectInfo, ref: str) -> ColumnRef:
    """``raw.customers.email`` / ``orders.customer_id`` / ``marts.fct_orders.status``."""
    table, _, column = ref.rpartition(".")
    if not table or not column:
        raise KeyError(f"{ref!r}: expected [schema.]table.column")
    return find_model(project, table).fqn, column


def impact(project: ProjectInfo, source: str, column: str) -> list[ColumnRef]:
    """Every model column depending, transitively, on ``source.column``; upstream models first."""
    model = find_model(project, source)
    if column not in ColumnGraph.columns(model):
        raise KeyError(f"{short_name(model)} has no column {column!r}")
    graph = ColumnGraph(project)
    seen: set[ColumnRef] = set()
    todo = [(model.fqn, column)]
    while todo:
        for child in graph.children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    order = {m.fqn: i for i, m in enumerate(project.topological())}
    return sorted(seen, key=lambda ref: (order.get(ref[0], len(order)), ref[0], ref[1]))


def impacted_reports(
    project: ProjectInfo,
    columns: Sequence[ColumnRef],
    extra: Mapping[dg.AssetKey, Sequence[dg.AssetKey]] | None = None,
) -> list[dg.AssetKey]:
    """Report assets reading a model among ``columns`` (keys follow the translator's [schema, table])."""
    dependencies: dict[dg.AssetKey, list[dg.AssetKey]] = _default_reports()
    for report, deps in (extra or {}).items():
        dependencies.setdefault(report, []).extend(deps)
    affected = {
        dg.AssetKey([project.models[fqn].schema, project.models[fqn].table])
        for fqn, _ in columns
        if fqn in project.models
    }
    return sorted(
        (report for report, deps in dependencies.items() if affected.intersection(deps)),
        key=lambda key: key.to_user_string(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from dagster_sqlmesh_bridge import load_project
    from pipelines.platform.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.governance.impact", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "column", help="[schema.]table.column, e.g. raw.customers.email or orders.customer_id"
    )
    parser.add_argument("--project-dir", default=None, help="default: SQLMESH_PROJECT_DIR or the bundled one")
    parser.add_argument("--gateway", default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    project_dir = Path(args.project_dir) if args.project_dir else settings.sqlmesh_project_dir
    project = load_project(project_dir, args.gateway or settings.sqlmesh_gateway)
    try:
        fqn, column = parse_column_ref(project, args.column)
        columns = impact(project, fqn, column)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    reports = impacted_reports(project, columns)
    if args.json:
        print(
            json.dumps(
                {
                    "column": display((fqn, column), project),
                    "columns": [display(ref, project) for ref in columns],
                    "reports": [key.to_user_string() for key in reports],
                },
                indent=2,
            )
        )
        return 0
    print(f"{display((fqn, column), project)}: {len(columns)} downstream column(s)")
    for ref in columns:
        print(f"  {display(ref, project)}")
    for key in reports:
        print(f"  report {key.to_user_string()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
