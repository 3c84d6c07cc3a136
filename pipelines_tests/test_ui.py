"""The Dagster web UI as users see it: ``dg dev`` on the repo, its GraphQL API, a browser.

One ``dg dev -w workspace.yaml`` (webserver + daemon) serves the whole module, isolated in a
temp dir (see ``ui_server.py``). The tests read the asset graph through GraphQL and compare it
with SQLMesh's own DAG, launch a partition-range backfill like the UI's "Materialize" dialog
does and check SQLMesh's state afterwards, and open the pages in Debian's chromium.
Screenshots land in ``test-output/ui/``; ``UPDATE_SCREENSHOTS=1`` also refreshes
``docs/images/asset-graph.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dagster_sqlmesh_bridge import ModelInfo, ProjectInfo, load_project
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT
from pipelines_tests.ui_server import LOCATION_NAME, REPO_ROOT, DagsterDev, ServerError, dagster_dev

MART = ("marts", "daily_revenue")
BACKFILL_START, BACKFILL_END = "2026-05-04", "2026-05-06"
BACKFILL_TIMEOUT = 420  # seconds; the daemon looks at backfills every 30 s
SCREENSHOTS = REPO_ROOT / "test-output" / "ui"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "asset-graph.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Startup lines that are not about the project, each with the reason it is expected.
EXPECTED_STARTUP_WARNINGS = {
    # test isolation: DAGSTER_HOME is a temp dir while the repo's dagster.yaml sits in the cwd
    r"Found a dagster instance configuration value \(dagster\.yaml\) in the current folder",
    # a brand-new instance has no event-log cursor yet
    r"EventLogConsumerDaemon - WARNING - No cursor for event type",
}
PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|\w+Warning\b|Traceback|Exception")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

ASSET_NODES = """
query {
  assetNodes {
    assetKey { path }
    groupName kinds isPartitioned
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    dependencyKeys { path }
    repository { location { name } }
  }
}"""
COLUMN_LINEAGE = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    metadataEntries {
      label
      ... on TableColumnLineageMetadataEntry {
        lineage { columnName columnDeps { assetKey { path } columnName } }
      }
    }
  }
}"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs(limit: 100) { id status assetSelection { path } }
    }
    ... on Error { message }
  }
}"""
ASSET_STATE = """
query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    isPartitioned
    assetPartitionStatuses {
      __typename
      ... on TimePartitionStatuses { ranges { status startKey endKey } }
    }
    assetMaterializations(limit: 1) { runId }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks { name blocking }
      }
    }
  }
}"""
CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) {
    runId status partition
    evaluation { success severity description }
  }
}"""


def key_str(path: list[str] | tuple[str, ...]) -> str:
    return "/".join(path)


def model_key(project: ProjectInfo, fqn: str) -> str:
    model = project.models[fqn]
    return key_str([model.schema, model.table])


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """One ``dg dev`` for the module; its output up to a healthy daemon is kept aside."""
    root = tmp_path_factory.mktemp("ui")
    with dagster_dev(root) as server:
        wait_for_daemons(server)
        server.startup_output = server.output()
        yield server


@pytest.fixture(scope="module")
def project() -> ProjectInfo:
    return load_project(BUNDLED_SQLMESH_PROJECT, None)


@pytest.fixture(scope="module")
def asset_nodes(ui: DagsterDev) -> dict[str, dict[str, Any]]:
    return {key_str(n["assetKey"]["path"]): n for n in ui.graphql(ASSET_NODES)["assetNodes"]}


def wait_for_daemons(server: DagsterDev, timeout: float = 90) -> None:
    """Backfills need the backfill daemon and the run queue: wait for their heartbeats."""
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
    needed = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}
    deadline = time.monotonic() + timeout
    statuses: dict[str, bool] = {}
    while time.monotonic() < deadline:
        daemons = server.graphql(query)["instance"]["daemonHealth"]["allDaemonStatuses"]
        statuses = {d["daemonType"]: bool(d["healthy"]) for d in daemons}
        if all(statuses.get(name) for name in needed):
            return
        time.sleep(2)
    raise ServerError(f"daemons not healthy after {timeout}s: {statuses}\n{server.output()[-4000:]}")


# ----------------------------------------------------------------------------- the server


def test_dagster_dev_loads_the_code_location_without_warnings(ui: DagsterDev) -> None:
    data = ui.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
        " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    entries = {e["name"]: e for e in data["workspaceOrError"]["locationEntries"]}
    assert list(entries) == [LOCATION_NAME]
    assert entries[LOCATION_NAME]["loadStatus"] == "LOADED"
    assert entries[LOCATION_NAME]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

    lines = [ANSI.sub("", line) for line in ui.startup_output.splitlines()]
    problems = [
        line
        for line in lines
        if PROBLEM.search(line) and not any(re.search(p, line) for p in EXPECTED_STARTUP_WARNINGS)
    ]
    assert problems == [], "unexpected warnings/errors while dagster dev started:\n" + "\n".join(problems)
    # the instance really is the isolated one: its files are in the temp home, not in the repo
    info = ui.graphql("{ instance { info } }")["instance"]["info"]
    base_dirs = re.findall(r"base_dir: (\S+)", info)
    assert base_dirs and all(d.startswith(str(ui.home)) for d in base_dirs), base_dirs
    assert str(REPO_ROOT) not in info
    assert list(ui.home.rglob("*.db")), "no SQLite storage in the temp DAGSTER_HOME"


# ------------------------------------------------------------------------ the GraphQL API


def test_asset_graph_matches_the_sqlmesh_dag(
    asset_nodes: dict[str, dict[str, Any]], project: ProjectInfo
) -> None:
    groups = {n["groupName"] for n in asset_nodes.values()}
    assert {"raw", "staging", "intermediate", "marts", "reports"} <= groups
    assert {n["repository"]["location"]["name"] for n in asset_nodes.values()} == {LOCATION_NAME}

    for model in project.internal_models:
        key = key_str([model.schema, model.table])
        assert key in asset_nodes, f"SQLMesh model {model.fqn} has no asset {key}"
        node = asset_nodes[key]
        assert node["groupName"] == model.schema
        assert {"sqlmesh", "duckdb"} <= set(node["kinds"]), (key, node["kinds"])
        assert node["isPartitioned"] == model.time_partitioned, key
        if model.owner:
            assert [o.get("team") or o.get("email") for o in node["owners"]] == [
                model.owner.removeprefix("team:")
            ], key
        upstream = {key_str(d["path"]) for d in node["dependencyKeys"]}
        assert upstream == {model_key(project, fqn) for fqn in model.depends_on}, key

    externals = [m for m in project.models.values() if m.external]
    assert externals, "the bundled project reads the raw zone through external models"
    for model in externals:
        node = asset_nodes[key_str([model.schema, model.table])]
        assert node["groupName"] == "raw"
        kinds = set(node["kinds"])
        assert {"parquet", "duckdb"} <= kinds and kinds & {"s3", "postgres"}, kinds
        assert node["dependencyKeys"] == []

    report = asset_nodes["reports/shop_report"]
    assert report["groupName"] == "reports"
    assert {key_str(d["path"]) for d in report["dependencyKeys"]} >= {"marts/daily_revenue"}


def test_column_lineage_through_the_api(ui: DagsterDev, project: ProjectInfo) -> None:
    marts = [m for m in project.internal_models if m.schema == "marts"]
    keys = [{"path": [m.schema, m.table]} for m in marts]
    nodes = ui.graphql(COLUMN_LINEAGE, {"keys": keys})["assetNodes"]
    lineage_by_key: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for node in nodes:
        entries = [e for e in node["metadataEntries"] if e["label"] == "dagster/column_lineage"]
        assert len(entries) <= 1
        lineage_by_key[key_str(node["assetKey"]["path"])] = {
            item["columnName"]: {
                (key_str(d["assetKey"]["path"]), d["columnName"]) for d in item["columnDeps"]
            }
            for item in (entries[0]["lineage"] if entries else [])
        }

    assert ("marts/dim_customers", "segment") in lineage_by_key["marts/fct_orders"]["customer_segment"]
    for model in marts:
        expected = expected_lineage(project, model)
        got = {c: deps for c, deps in lineage_by_key[key_str([model.schema, model.table])].items() if deps}
        assert got == expected, model.fqn


def expected_lineage(project: ProjectInfo, model: ModelInfo) -> dict[str, set[tuple[str, str]]]:
    return {
        column: {(model_key(project, parent), parent_column) for parent, parent_column in parents}
        for column, parents in model.column_lineage.items()
        if parents
    }


def upstream_closure(asset_nodes: dict[str, dict[str, Any]], key: str) -> set[str]:
    seen: set[str] = set()
    todo = [key]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(key_str(d["path"]) for d in asset_nodes[current]["dependencyKeys"])
    return seen


@pytest.mark.slow  # 2.5 min on an idle machine (the backfill daemon ticks every 30 s), 5 when busy
@pytest.mark.timeout(900)
def test_partition_range_backfill_of_a_mart_and_its_upstream(
    ui: DagsterDev,
    asset_nodes: dict[str, dict[str, Any]],
    project: ProjectInfo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    selection = sorted(upstream_closure(asset_nodes, key_str(MART)))
    assert {"raw/orders", "staging/stg_orders", "marts/fct_orders", key_str(MART)} <= set(selection)
    partitions = {"range": {"start": BACKFILL_START, "end": BACKFILL_END}}
    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": k.split("/")},
                "partitions": partitions if asset_nodes[k]["isPartitioned"] else None,
            }
            for k in selection
        ],
        "title": "test_ui: daily_revenue and upstream, 3 days",
    }
    launched = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = wait_for_backfill(ui, launched["backfillId"])

    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    statuses = [(r["id"][:8], r["status"], len(r["assetSelection"] or [])) for r in backfill["runs"]]
    assert statuses and all(status == "SUCCESS" for _, status, _ in statuses), statuses
    run_assets = {key_str(a["path"]) for r in backfill["runs"] for a in r["assetSelection"] or []}
    assert run_assets == set(selection)

    days = [BACKFILL_START, "2026-05-05", BACKFILL_END]
    state = {
        key_str(n["assetKey"]["path"]): n
        for n in ui.graphql(ASSET_STATE, {"keys": [{"path": k.split("/")} for k in selection]})["assetNodes"]
    }
    for key, node in state.items():
        assert node["assetMaterializations"], f"{key} was not materialized"
        if node["isPartitioned"]:
            ranges = node["assetPartitionStatuses"]["ranges"]
            assert [(r["status"], r["startKey"], r["endKey"]) for r in ranges] == [
                ("MATERIALIZED", BACKFILL_START, BACKFILL_END)
            ], key

    # SQLMesh's own state: exactly the three daily intervals of the mart, nothing more
    for name in ("SQLMESH_PROJECT_DIR", "SQLMESH_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ui.env.items():
        if name.startswith("PIPELINES_"):
            monkeypatch.setenv(name, value)
    intervals = sqlmesh_intervals(f'"warehouse"."{MART[0]}"."{MART[1]}"')
    assert intervals == days

    assert_checks_ran(ui, state, project)


def wait_for_backfill(ui: DagsterDev, backfill_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    backfill: dict[str, Any] = {}
    while time.monotonic() < deadline:
        backfill = ui.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return backfill
        time.sleep(3)
    pytest.fail(
        f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT}s: {backfill}\n{ui.output()[-5000:]}"
    )


def sqlmesh_intervals(fqn: str) -> list[str]:
    """The days SQLMesh's prod environment has computed for ``fqn`` (state read, then closed)."""
    from sqlmesh import Context

    ctx = Context(paths=str(BUNDLED_SQLMESH_PROJECT), load=True)
    try:
        env = ctx.state_sync.get_environment("prod")
        assert env is not None, "the backfill should have created SQLMesh's prod environment"
        [snapshot_id] = [s.snapshot_id for s in env.snapshots if s.name == fqn]
        snapshot = ctx.state_sync.get_snapshots([snapshot_id])[snapshot_id]
        days = []
        for start, end in snapshot.intervals:
            day = datetime.fromtimestamp(start / 1000, tz=UTC).date()
            last = datetime.fromtimestamp(end / 1000, tz=UTC).date()
            while day < last:
                days.append(day.isoformat())
                day += timedelta(days=1)
        return days
    finally:
        ctx.close()


def assert_checks_ran(ui: DagsterDev, state: dict[str, dict[str, Any]], project: ProjectInfo) -> None:
    """Every check of every backfilled SQLMesh model was evaluated, and its SQLMesh audits passed.

    Other checks may fail on purpose: ``freshness`` does whenever the backfilled days are older
    than three days (docs/first-ten-minutes.md reads that failure in the UI).
    """
    audits = {key_str([m.schema, m.table]): {a.name for a in m.audits} for m in project.internal_models}
    evaluated = 0
    for key, node in state.items():
        if key not in audits:
            continue
        checks = node["assetChecksOrError"]["checks"]
        assert {c["name"] for c in checks} >= audits[key], key
        for check in checks:
            executions = ui.graphql(
                CHECK_EXECUTIONS, {"key": {"path": key.split("/")}, "name": check["name"]}
            )["assetCheckExecutions"]
            results = [e["evaluation"] for e in executions if e["evaluation"] is not None]
            assert results, f"check {key}:{check['name']} was not evaluated: {executions}"
            evaluated += len(results)
            if check["name"] in audits[key]:
                assert all(r["success"] for r in results), (key, check["name"], results)
    assert evaluated >= sum(len(a) for k, a in audits.items() if k in state)


# ------------------------------------------------------------------------------ the browser


@pytest.fixture(scope="module")
def browser_page(ui: DagsterDev) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            # the first visit shows a "Join the community" dialog over the page: mark it seen
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_page(page: Any, ui: DagsterDev, path: str) -> None:
    page.goto(f"{ui.url}{path}", wait_until="domcontentloaded")
    page.wait_for_load_state("networkidle")


def expand_all_groups(page: Any, attempts: int = 4) -> None:
    """Dagster's "Expand all groups" shortcut (Alt+E) toggles, and a press before the graph has
    its groups or its key handler does nothing: press once the collapsed groups are drawn, and
    again only while no asset of the expanded graph has appeared."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.get_by_text("marts", exact=True).first.wait_for(state="visible")
    for _ in range(attempts):
        page.keyboard.press("Alt+KeyE")
        try:
            page.get_by_text("daily_revenue", exact=True).first.wait_for(state="visible", timeout=20_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"Alt+E did not expand the asset groups after {attempts} presses")


def test_browser_shows_the_asset_graph(
    ui: DagsterDev, browser_page: Any, asset_nodes: dict[str, dict[str, Any]]
) -> None:
    # Global lineage: groups start collapsed; "Expand all groups" (Alt+E) shows the assets.
    open_page(browser_page, ui, "/asset-groups")
    browser_page.get_by_text("Global asset lineage").first.wait_for(state="visible")
    expand_all_groups(browser_page)
    for label in ("daily_revenue", "fct_orders"):
        browser_page.get_by_text(label, exact=True).first.wait_for(state="visible")
    browser_page.screenshot(path=str(SCREENSHOTS / "global-lineage.png"))

    # The mart's upstream lineage: every asset the backfill test materializes, by name.
    open_page(browser_page, ui, f"/assets/{key_str(MART)}?view=lineage&lineageScope=upstream&lineageDepth=20")
    for key in sorted(upstream_closure(asset_nodes, key_str(MART))):
        browser_page.get_by_text(key.split("/")[-1], exact=True).first.wait_for(state="visible")
    for group in ("raw", "staging", "intermediate", "marts"):
        browser_page.get_by_text(group, exact=True).first.wait_for(state="visible")
    browser_page.wait_for_timeout(1500)  # let the layout animation settle before the picture
    shot = SCREENSHOTS / "asset-graph.png"
    browser_page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_browser_shows_an_asset_and_its_checks(ui: DagsterDev, browser_page: Any) -> None:
    key = {"path": list(MART)}
    data = ui.graphql(
        "query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { description"
        " assetChecksOrError { ... on AssetChecks { checks { name } } } } }",
        {"k": [key]},
    )
    [node] = data["assetNodes"]
    check_names = sorted(c["name"] for c in node["assetChecksOrError"]["checks"])
    assert check_names

    open_page(browser_page, ui, f"/assets/{key_str(MART)}")
    browser_page.get_by_text("Latest materialization").first.wait_for(state="visible")
    browser_page.get_by_text(node["description"].split("\n")[0][:40]).first.wait_for(state="visible")
    browser_page.screenshot(path=str(SCREENSHOTS / "asset-daily_revenue.png"))

    open_page(browser_page, ui, f"/assets/{key_str(MART)}?view=checks")
    browser_page.get_by_text(f"Checks ({len(check_names)})").first.wait_for(state="visible")
    for name in check_names:
        browser_page.get_by_text(name, exact=True).first.wait_for(state="visible")
    browser_page.screenshot(path=str(SCREENSHOTS / "asset-daily_revenue-checks.png"))


# ------------------------------------------------------------------------------- dg dev


def test_dg_dev_names_the_code_location_like_the_workspace() -> None:
    """``dg dev`` (the README's alternative) derives the location name from pyproject.toml, else
    from the checkout's folder name; it must match workspace.yaml so runs, tags and links agree."""
    from dagster_dg_core.context import DgContext

    name = DgContext.for_project_environment(REPO_ROOT, {}).code_location_name
    assert name == LOCATION_NAME, (
        f"`dg dev` would name the code location {name!r} (the folder name); add "
        f'code_location_name = "{LOCATION_NAME}" under [tool.dg.project] in pyproject.toml'
    )
