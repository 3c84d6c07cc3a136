"""Column lineage read from SQLMesh's rendered query equals SQLMesh's own ``column_dependencies``."""

from __future__ import annotations

from pathlib import Path

from dagster_sqlmesh_bridge.project import _column_lineage
from pipelines_tests.sqlmesh_projects import write_shapes_project


def test_fast_lineage_matches_sqlmesh_on_every_shape(tmp_path: Path) -> None:
    from sqlmesh import Context
    from sqlmesh.core.lineage import column_dependencies

    ctx = Context(paths=str(write_shapes_project(tmp_path)))
    try:
        models = [m for m in ctx.models.values() if not m.kind.is_external]
        for model in models:
            expected = {
                column: sorted(
                    (p, c) for p, cols in column_dependencies(ctx, model.fqn, column).items() for c in cols
                )
                for column in model.columns_to_types or {}
            }
            assert _column_lineage(ctx, model) == expected, model.fqn
        # the walk names parents across models, and managed or unknown-schema columns still match
        history = next(m for m in models if m.name == "shapes.items_history")
        assert _column_lineage(ctx, history)["price"] == [('"warehouse"."shapes"."items"', "price")]
        assert _column_lineage(ctx, history)["valid_from"] == []
    finally:
        ctx.close()
