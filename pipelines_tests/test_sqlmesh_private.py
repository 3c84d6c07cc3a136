"""The bridge's only read of a SQLMesh internal breaks loudly here on an upgrade, not silently."""

from __future__ import annotations

import sqlmesh

from pipelines.settings import BUNDLED_SQLMESH_PROJECT
from pipelines.sqlmesh_bridge.sqlmesh_private import PINNED_SQLMESH, model_source_path


def test_the_pinned_sqlmesh_is_the_installed_one() -> None:
    # an upgrade must re-check model_source_path (SQLMesh's private Model._path) and bump the pin
    assert sqlmesh.__version__ == PINNED_SQLMESH


def test_model_source_path_names_the_model_file() -> None:
    from sqlmesh import Context

    ctx = Context(paths=[str(BUNDLED_SQLMESH_PROJECT)])
    try:
        model = ctx.get_model("marts.daily_revenue")
        path = model_source_path(model)
    finally:
        ctx.close()
    assert path == str(BUNDLED_SQLMESH_PROJECT / "models" / "marts" / "daily_revenue.sql")


def test_other_versions_get_no_path_instead_of_a_private_read(monkeypatch) -> None:  # noqa: ANN001
    class Model:
        _path = "/somewhere/model.sql"

    assert model_source_path(Model()) == "/somewhere/model.sql"
    monkeypatch.setattr(sqlmesh, "__version__", "9.9.9")
    assert model_source_path(Model()) is None
