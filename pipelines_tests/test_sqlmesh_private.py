"""The SQLMesh internals the bridge relies on break loudly here on an upgrade, not silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlmesh

from dagster_sqlmesh_bridge.sqlmesh_private import PINNED_SQLMESH, atomic_batches, model_source_path
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT


def test_the_pinned_sqlmesh_is_the_installed_one() -> None:
    # an upgrade must re-check model_source_path (SQLMesh's private Model._path) and
    # atomic_batches (the tests below) and bump the pin
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


DUCKLAKE_CONFIG = """\
gateways:
  local:
    connection:
      type: duckdb
      catalogs:
        lake:
          type: ducklake
          path: '{root}/catalog.ducklake'
          data_path: '{root}/data/'
      extensions: [ducklake]
      concurrent_tasks: 1
    state_connection:
      type: duckdb
      database: '{root}/state.duckdb'
default_gateway: local
model_defaults:
  dialect: duckdb
  start: '2026-01-01'
  cron: '@daily'
"""

# the audit reads the table's columns (EngineAdapter.columns) after the batch's transaction
DAILY = """\
MODEL (
  name demo.daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  audits (not_null(columns := (ds, id)))
);
SELECT d::DATE AS ds, i AS id
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), range(3) AS r(i)
"""


def _restatement_snapshots(ctx: Any) -> list[dict[str, list[str]]]:
    """The DuckLake snapshots (their ``changes``) one restatement of demo.daily commits."""
    query = "SELECT snapshot_id, changes FROM ducklake_snapshots('lake') ORDER BY snapshot_id"
    before = len(ctx.engine_adapter.fetchall(query))
    ctx.plan(
        "prod",
        restate_models=["demo.daily"],
        start="2026-01-01",
        end="2026-01-03",
        auto_apply=True,
        no_prompts=True,
    )
    rows = ctx.engine_adapter.fetchall("SELECT ds, count(*) FROM demo.daily GROUP BY ds ORDER BY ds")
    assert [n for _, n in rows] == [3, 3, 3]  # the restatement recomputed every day
    return [changes for _, changes in ctx.engine_adapter.fetchall(query)[before:]]


def test_a_restated_interval_is_one_ducklake_snapshot(tmp_path: Path) -> None:
    """SQLMesh still wraps an interval's DELETE and INSERT in ``transaction()``: with
    ``atomic_batches`` DuckLake commits them as one snapshot, without it as two."""
    from sqlmesh import Context
    from sqlmesh.core.engine_adapter import DuckDBEngineAdapter

    from pipelines.platform.duckdb_extensions import install_extensions

    install_extensions()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "daily.sql").write_text(DAILY)
    (tmp_path / "config.yaml").write_text(DUCKLAKE_CONFIG.format(root=tmp_path))
    ctx = Context(paths=[str(tmp_path)])
    try:
        ctx.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True)
        ctx.run("prod", start="2026-01-01", end="2026-01-03", execution_time="2026-01-04", ignore_cron=True)
        stock = _restatement_snapshots(ctx)
        with atomic_batches() as atomic:
            assert atomic and DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS
            restated = _restatement_snapshots(ctx)
        assert DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS is False  # stock value restored
    finally:
        ctx.close()
    # stock SQLMesh: the DELETE and the INSERT are two commits (a reader sees the gap)
    assert [sorted(c) for c in stock] == [["inlined_delete"], ["inlined_insert"]]
    # one batch (the three days) = one snapshot holding both
    assert [sorted(c) for c in restated] == [["inlined_delete", "inlined_insert"]]


def test_atomic_batches_nest_and_keep_stock_behaviour_on_other_versions(monkeypatch) -> None:  # noqa: ANN001
    from sqlmesh.core.engine_adapter import DuckDBEngineAdapter

    stock_columns = DuckDBEngineAdapter.columns
    with atomic_batches():
        with atomic_batches():
            assert DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS is True
        assert DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS is True  # the outer holder still runs
        assert DuckDBEngineAdapter.columns is not stock_columns
    assert DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS is False
    assert DuckDBEngineAdapter.columns is stock_columns
    monkeypatch.setattr(sqlmesh, "__version__", "9.9.9")
    said: list[str] = []

    class Log:
        def warning(self, message: str) -> None:
            said.append(message)

    with atomic_batches(Log()) as atomic:
        assert atomic is False
        assert DuckDBEngineAdapter.SUPPORTS_TRANSACTIONS is False
    assert "not the pinned" in said[0] and "DELETE and INSERT separately" in said[0]
