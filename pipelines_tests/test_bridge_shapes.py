"""Every SQLMesh project shape through the bridge, compared with a bare SQLMesh run on a copy."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines_tests.conftest import Deployment, materialized_keys
from pipelines_tests.sqlmesh_projects import write_multi_repo, write_shapes_project


def key(table: str, schema: str = "shapes") -> dg.AssetKey:
    return dg.AssetKey([schema, table])


def rows(database: Path, table: str, skip: tuple[str, ...] = ()) -> list[tuple]:
    gc.collect()  # a closed SQLMesh context's DuckDB handle goes with its reference cycles
    con = duckdb.connect(str(database), read_only=True)
    try:
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in skip]
        return sorted(con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(), key=repr)
    finally:
        con.close()


def bare_sqlmesh(paths: list[Path], runs: list[dict]) -> None:
    """The same project run by SQLMesh alone: create prod, then ``Context.run`` per entry."""
    from sqlmesh import Context

    ctx = Context(paths=[str(p) for p in paths])
    try:
        ctx.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True)
        for kwargs in runs:
            assert ctx.run("prod", ignore_cron=True, **kwargs).name in ("SUCCESS", "NOTHING_TO_DO")
    finally:
        ctx.close()


UNPARTITIONED = [
    "items",
    "cheap_count",
    "items_history",
    "items_latest",
    "py_model",
    "bp_a",
    "bp_b",
    "custom",
    "from_src",
]


def test_every_shape_loads_runs_and_matches_bare_sqlmesh(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_shapes_project(deployment.root)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
    defs = deployment.definitions()
    graph = defs.resolve_asset_graph()

    # one partitions definition per interval unit (and start), matching SQLMesh's intervals
    hourly = graph.get(key("hourly")).partitions_def
    assert isinstance(hourly, dg.TimeWindowPartitionsDefinition) and hourly.cron_schedule == "0 * * * *"
    daily = graph.get(key("daily_str")).partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition)
    assert daily.start == datetime(2026, 2, 1, tzinfo=UTC)  # the epoch-ms start
    assert graph.get(key("gated")).partitions_def is daily  # same unit and start: same definition
    monthly = graph.get(key("monthly")).partitions_def
    assert isinstance(monthly, dg.MonthlyPartitionsDefinition)
    recent = graph.get(key("recent")).partitions_def
    week_ago = (datetime.now(UTC) - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert isinstance(recent, dg.DailyPartitionsDefinition) and recent.start == week_ago
    # unpartitioned kinds; EMBEDDED is no asset, its readers depend on what it reads
    for table in UNPARTITIONED:
        assert graph.get(key(table)).partitions_def is None
    assert not graph.has(key("cheap_items"))
    assert graph.get(key("cheap_count")).parent_keys == {key("items")}
    # a table read but defined nowhere is an external asset, not a dropped dependency
    source = graph.get(key("events", "src"))
    assert not source.is_materializable
    assert graph.get(key("from_src")).parent_keys == {key("events", "src")}
    assert graph.get(key("hourly")).kinds == {"sqlmesh", "duckdb"}
    # another project: none of the bundled shop's assets
    assert not graph.has(dg.AssetKey(["raw", "orders"])) and not graph.has(
        dg.AssetKey(["marts", "fct_orders"])
    )

    # the bridge: one run per partitioning, exact ranges
    result = deployment.run([key("hourly")], start="2026-02-27-00:00", end="2026-02-28-23:00", defs=defs)
    assert result.success
    hours = {e.partition for e in result.get_asset_materialization_events() if e.asset_key == key("hourly")}
    assert len(hours) == 48 and "2026-02-27-00:00" in hours and "2026-02-28-23:00" in hours
    result = deployment.run([key("daily_str"), key("gated")], start="2026-02-27", end="2026-02-28", defs=defs)
    assert result.success and materialized_keys(result) == {key("daily_str"), key("gated")}
    # a row count per partition, each filtered on the string time column
    counts = {
        e.partition: e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key == key("daily_str")
    }
    assert counts == {"2026-02-27": 1, "2026-02-28": 1}
    result = deployment.run([key("monthly")], start="2026-02-01", defs=defs)
    assert result.success and materialized_keys(result) == {key("monthly")}
    result = deployment.run([key(t) for t in UNPARTITIONED], defs=defs)
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    assert materialized_keys(result) == {key(t) for t in UNPARTITIONED}

    # bare SQLMesh on a copy over the same intervals
    bare = write_shapes_project(deployment.root, name="bare")
    bare_sqlmesh(
        [bare],
        [
            {"start": "2026-02-27", "end": "2026-02-28", "execution_time": "2026-03-01"},
            {"start": "2026-02-01", "end": "2026-02-28", "execution_time": "2026-03-01",
             "select_models": ["shapes.monthly"]},
        ],
    )  # fmt: skip
    ours, theirs = (
        deployment.root / "project-db" / "warehouse.duckdb",
        deployment.root / "bare-db" / "warehouse.duckdb",
    )
    for table in ["hourly", "daily_str", "gated", "monthly", *UNPARTITIONED]:
        skip = ("valid_from", "valid_to") if table == "items_history" else ()
        assert rows(ours, f"shapes.{table}", skip) == rows(theirs, f"shapes.{table}", skip), table
    assert len(rows(ours, "shapes.hourly")) == 48
    assert rows(ours, "shapes.monthly") == [(datetime(2026, 2, 1).date(), 28)]

    # the relative start: yesterday is one of its partitions and computes
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = deployment.run([key("recent")], start=yesterday, defs=defs)
    assert result.success and materialized_keys(result) == {key("recent")}
    assert rows(ours, "shapes.recent") == [(datetime.fromisoformat(yesterday).date(), 1)]

    # a second click keeps SCD type 2 history (SQLMesh forbids restating it), recomputes the rest
    history = rows(ours, "shapes.items_history")
    again = deployment.run([key("items_history"), key("custom")], defs=defs)
    assert again.success and key("custom") in materialized_keys(again)
    assert rows(ours, "shapes.items_history") == history


def test_multi_repo_project_by_argument_and_setting(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.definitions import build_definitions, settings_from_env
    from pipelines.platform.settings import Settings

    repos = write_multi_repo(deployment.root / "ours")
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", ":".join(str(r) for r in repos))
    settings, dirs = settings_from_env()
    assert dirs == repos and settings.sqlmesh_project_dir == repos[0]
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(repos[0]))
    defs = build_definitions(Settings.from_env(), project_dirs=repos)
    graph = defs.resolve_asset_graph()
    # the project's own raw.orders: no key is reserved for the bundled shop
    assert graph.get(key("orders", "raw")).is_materializable
    assert graph.get(key("totals", "b")).parent_keys == {key("orders", "raw")}
    result = deployment.run([key("orders", "raw")], start="2026-02-01", end="2026-02-03", defs=defs)
    assert result.success
    result = deployment.run([key("totals", "b")], defs=defs)
    assert result.success and materialized_keys(result) == {key("totals", "b")}

    bare = write_multi_repo(deployment.root / "bare")
    bare_sqlmesh(bare, [{"start": "2026-02-01", "end": "2026-02-03", "execution_time": "2026-02-04"}])
    ours = deployment.root / "ours" / "multi-db" / "warehouse.duckdb"
    theirs = deployment.root / "bare" / "multi-db" / "warehouse.duckdb"
    for table in ("raw.orders", "b.totals"):
        assert rows(ours, table) == rows(theirs, table), table
    assert rows(ours, "b.totals") == [(1, 10)]  # one batch for the three days


def test_the_documented_example_is_a_working_code_location(tmp_path: Path) -> None:
    import dagster_sqlmesh_bridge as bridge

    repos = write_multi_repo(tmp_path)
    example = bridge.__doc__.split("Example (a complete code location for any SQLMesh project)::")[1]
    code = "\n".join(line[4:] for line in example.splitlines())
    code = code.replace("/srv/repo_a", str(repos[0])).replace("/srv/repo_b", str(repos[1]))
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own docstring
    defs: dg.Definitions = namespace["defs"]
    job = dg.define_asset_job("all", selection=[key("orders", "raw")])
    job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("all")
    with dg.instance_for_test() as instance:
        result = job_def.execute_in_process(instance=instance, partition_key="2026-02-01")
    assert result.success and materialized_keys(result) == {key("orders", "raw")}


def test_the_bundled_shop_joins_only_its_own_project_or_when_asked(tmp_path: Path) -> None:
    from pipelines.definitions import shop_enabled
    from pipelines.platform.settings import Settings

    bundled = Settings.from_env({"PIPELINES_DATA_DIR": str(tmp_path)})
    other = Settings.from_env({"SQLMESH_PROJECT_DIR": str(write_shapes_project(tmp_path))})
    assert shop_enabled(bundled, {}) and not shop_enabled(other, {})
    assert shop_enabled(other, {"PIPELINES_SHOP_DEFS": "1"})
    assert not shop_enabled(bundled, {"PIPELINES_SHOP_DEFS": "0"})
