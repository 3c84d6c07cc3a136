"""``pipelines.SQLMeshProjectComponent`` in a team's own Dagster project, outside this repository.

The test writes a fresh ``dg`` project (its own pyproject.toml and defs folder) and two SQLMesh
projects, scaffolds one component instance per project with ``dg scaffold defs``, checks them
with ``dg check defs``, loads them with Dagster's own ``load_from_defs_folder`` and materializes a
partition range and an unpartitioned model with their audits and default checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).parent / "dg")

CONFIG = """\
gateways:
  local:
    connection: {{type: duckdb, database: {db}}}
    state_connection: {{type: duckdb, database: {state}}}
default_gateway: local
model_defaults: {{dialect: duckdb, start: '2026-01-01', cron: '@daily'}}
"""
DAILY = """\
MODEL (
  name sales.daily_orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  grain (ds, id),
  audits (not_null(columns := (ds, id)))
);
SELECT d::DATE AS ds, i AS id, i * {factor} AS amount
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), range(4) AS r(i)
"""
SUMMARY = """\
MODEL (
  name sales.order_summary,
  kind FULL,
  audits (not_null(columns := (days)))
);
SELECT count(DISTINCT ds)::BIGINT AS days, sum(amount)::BIGINT AS amount FROM sales.daily_orders
"""


def write_sqlmesh_project(root: Path, factor: int) -> Path:
    (root / "models").mkdir(parents=True)
    config = CONFIG.format(db=root / "warehouse.duckdb", state=root / "state.duckdb")
    (root / "config.yaml").write_text(config)
    (root / "models" / "daily_orders.sql").write_text(DAILY.format(factor=factor))
    (root / "models" / "order_summary.sql").write_text(SUMMARY)
    return root


def write_dg_project(root: Path) -> str:
    """A minimal dg project like `create-dagster project` writes; returns its module name."""
    module = f"team_{uuid.uuid4().hex[:8]}"
    (root / module / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{module}"
            version = "0.1.0"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "{module}"
            """
        )
    )
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (root / module / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(project_root=Path(__file__).parent.parent)\n"
    )
    return module


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    project = tmp_path / "team"
    module = write_dg_project(project)
    write_sqlmesh_project(project / "sqlmesh" / "orders", factor=10)
    write_sqlmesh_project(project / "sqlmesh" / "web", factor=1)
    for name in ("PIPELINES_ENV", "SQLMESH_PROJECT_DIR", "SQLMESH_GATEWAY", "PIPELINES_SHOP_DEFS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.syspath_prepend(str(project))
    return project, module


def dg_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{project}{os.pathsep}{REPO}", "NO_COLOR": "1"}
    return subprocess.run([DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def scaffold(project: Path, name: str) -> subprocess.CompletedProcess[str]:
    component = "pipelines.SQLMeshProjectComponent"
    return dg_cli(project, "scaffold", "defs", component, name, "--project-path", f"sqlmesh/{name}")


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        out.setdefault(mat.asset_key.to_user_string(), set()).add(mat.partition)
    return out


def test_dg_lists_the_component() -> None:
    listed = dg_cli(REPO, "list", "components", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {entry["key"] for entry in json.loads(listed.stdout)["items"]}
    assert "pipelines.SQLMeshProjectComponent" in keys


def test_two_sqlmesh_projects_in_a_team_dg_project(team: tuple[Path, str]) -> None:
    project, module = team
    for name in ("orders", "web"):
        made = scaffold(project, name)
        assert made.returncode == 0, made.stdout + made.stderr
    written = (project / module / "defs" / "orders" / "defs.yaml").read_text()
    assert "type: pipelines.SQLMeshProjectComponent" in written and "../../../sqlmesh/orders" in written

    checked = dg_cli(project, "check", "defs")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    defs = dg.load_from_defs_folder(project_root=project)
    orders_daily = dg.AssetKey(["orders", "sales", "daily_orders"])
    orders_summary = dg.AssetKey(["orders", "sales", "order_summary"])
    web_daily = dg.AssetKey(["web", "sales", "daily_orders"])
    repo = defs.get_repository_def()
    assert {"orders_sqlmesh_plan", "web_sqlmesh_plan"} <= {j.name for j in repo.get_all_jobs()}
    graph = defs.resolve_asset_graph()
    assert {orders_daily, orders_summary, web_daily} <= set(graph.get_all_asset_keys())
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("orders/sales/daily_orders", "not_null") in checks
    assert ("orders/sales/daily_orders", "volume_anomaly") in checks  # a default check

    range_tags = {
        "dagster/asset_partition_range_start": "2026-01-01",
        "dagster/asset_partition_range_end": "2026-01-03",
    }
    jobs = [
        dg.define_asset_job("daily", selection=[orders_daily, web_daily]),
        dg.define_asset_job("summary", selection=[orders_summary]),
    ]
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=jobs))
    with dg.instance_for_test() as instance:
        daily = merged.resolve_job_def("daily").execute_in_process(instance=instance, tags=range_tags)
        summary = merged.resolve_job_def("summary").execute_in_process(instance=instance)
    days = {"2026-01-01", "2026-01-02", "2026-01-03"}
    # a person's run restates, as SQLMesh does: the days and what was computed from them downstream
    assert materialized(daily) == {
        "orders/sales/daily_orders": days,
        "web/sales/daily_orders": days,
        "orders/sales/order_summary": {None},
        "web/sales/order_summary": {None},
    }
    assert materialized(summary) == {"orders/sales/order_summary": {None}}
    evaluations = [
        e.asset_check_evaluation_data
        for r in (daily, summary)
        for e in r.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    by_check = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations}
    assert by_check[("orders/sales/daily_orders", "not_null")] is True
    assert by_check[("orders/sales/order_summary", "not_null")] is True
    assert ("orders/sales/daily_orders", "column_schema_change") in by_check
    with duckdb.connect(str(project / "sqlmesh" / "orders" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT days, amount FROM sales.order_summary").fetchone() == (3, 3 * 10 * 6)


def test_colliding_keys_point_at_the_key_prefix(team: tuple[Path, str]) -> None:
    project, module = team
    for name in ("orders", "web"):
        folder = project / module / "defs" / name
        folder.mkdir()
        (folder / "defs.yaml").write_text(
            f"type: pipelines.SQLMeshProjectComponent\nattributes:\n  project: ../../../sqlmesh/{name}\n"
            f"  name: {name}\n"
        )
    with pytest.raises(Exception) as raised:
        dg.load_from_defs_folder(project_root=project)
    text = "".join(str(e) for e in _chain(raised.value))
    assert "asset 'sales/daily_orders' is made by two SQLMesh projects" in text
    assert "key_prefix: web" in text and "sqlmesh/orders" in text and "sqlmesh/web" in text


def test_a_wrong_attribute_is_dagsters_resolution_error(team: tuple[Path, str]) -> None:
    project, module = team
    folder = project / module / "defs" / "orders"
    folder.mkdir()
    (folder / "defs.yaml").write_text(
        "type: pipelines.SQLMeshProjectComponent\nattributes:\n  project: ../../../sqlmesh/orders\n"
        "  translation: {key_prefx: orders}\n"
    )
    checked = dg_cli(project, "check", "defs")
    assert checked.returncode != 0
    assert "key_prefx" in checked.stdout + checked.stderr


def _chain(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def test_state_is_written_by_dg_and_trusted_only_while_the_project_is_unchanged(
    team: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, module = team
    made = scaffold(project, "orders")
    assert made.returncode == 0, made.stderr
    refreshed = dg_cli(project, "utils", "refresh-defs-state")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    states = list((project / ".dagster").rglob("state")) if (project / ".dagster").exists() else []
    states = states or [p for p in project.rglob("state") if p.is_file()]
    assert len(states) == 1 and "daily_orders" in states[0].read_text()

    import dagster_sqlmesh_bridge as bridge

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the project was read although the state matches it")

    with monkeypatch.context() as patched:
        patched.setattr(bridge, "load_project", no_read)
        keys = dg.load_from_defs_folder(project_root=project).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["orders", "sales", "daily_orders"]) in keys

    # a model added after the state was written: the state is stale, the project is read again
    (project / "sqlmesh" / "orders" / "models" / "extra.sql").write_text(
        "MODEL (name sales.extra, kind FULL);\nSELECT 1 AS x\n"
    )
    keys = dg.load_from_defs_folder(project_root=project).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["orders", "sales", "extra"]) in keys


def test_without_the_shop_folder_the_platform_loads_and_its_tests_pass(tmp_path: Path) -> None:
    """The bundled shop is the folder pipelines/defs/shop: a copy without it still loads (the
    platform's jobs, no shop asset) and the platform's component tests pass in that copy."""
    import shutil

    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".cache", ".local_defs_state", "__pycache__", ".data", ".lake")
    for name in ("pipelines", "pipelines_tests"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    shutil.rmtree(copy / "pipelines" / "defs" / "shop")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "SQLMESH_"))}
    env.update({"PYTHONPATH": str(copy), "PIPELINES_DATA_DIR": str(tmp_path / "data")})
    load = (
        "import json, pipelines, pipelines.definitions as d; r = d.defs.get_repository_def();"
        "print(json.dumps({'package': pipelines.__file__, 'jobs': sorted(j.name for j in r.get_all_jobs()),"
        "'assets': len(list(d.defs.resolve_asset_graph().get_all_asset_keys()))}))"
    )
    proc = subprocess.run([sys.executable, "-c", load], cwd=copy, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["package"].startswith(str(copy))
    assert {"warehouse_maintenance", "warehouse_file_check"} <= set(loaded["jobs"])
    assert loaded["assets"] == 0 and "sqlmesh_plan" not in loaded["jobs"]
    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "pipelines_tests/test_component.py",
            "-k",
            "colliding or wrong_attribute or lists_the_component",
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "3 passed" in tests.stdout


@pytest.mark.slow
def test_the_readme_commands_work_verbatim_in_a_team_project(tmp_path: Path) -> None:
    """README, "Use it in your own Dagster project": its three commands, run as written in a
    fresh dg project beside a clone of this repository (`dg dev` until its UI lists the asset)."""
    import re
    import shutil
    import time
    import urllib.request

    from pipelines_tests.api_server import free_port

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it in your own Dagster project", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```")[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and commands[-1] == "uv run dg dev"
    (tmp_path / "pipelines").symlink_to(REPO)
    project = tmp_path / "team"
    module = write_dg_project(project)
    text = (project / "pyproject.toml").read_text()
    python = 'version = "0.1.0"\nrequires-python = ">=3.11,<3.14"\ndependencies = []\n'
    (project / "pyproject.toml").write_text(text.replace('version = "0.1.0"\n', python))
    write_sqlmesh_project(project / "sqlmesh_project", factor=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "SQLMESH_", "VIRTUAL_ENV"))}
    env["PIPELINES_DATA_DIR"] = str(tmp_path / "data")
    uv = shutil.which("uv") or "uv"
    for command in commands[:-1]:
        done = subprocess.run(
            [uv, *command.split()[1:]], cwd=project, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert (project / module / "defs" / "sales" / "defs.yaml").is_file()
    port = free_port()
    dev = subprocess.Popen(
        [uv, *commands[-1].split()[1:], "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        deadline, seen = time.monotonic() + 300, ""
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                seen = urllib.request.urlopen(request, timeout=10).read().decode()  # noqa: S310 - local
                if "daily_orders" in seen:
                    break
            except OSError:
                pass
            time.sleep(2)
        assert re.search(r'"sales",\s*"sales",\s*"daily_orders"', seen), seen[-1000:]
    finally:
        os.killpg(dev.pid, 15)
        dev.wait(timeout=60)


def test_translation_quality_and_automation_attributes(team: tuple[Path, str]) -> None:
    project, module = team
    for name, attributes in {
        "orders": """
  name: orders
  translation:
    key_prefix: shop
    group_name: "orders_{{ model.schema }}"
    tags: {team: "{{ model.schema }}_team"}
    owners: ["team:sales"]
  quality:
    defaults: {severity: ERROR}
  automation: {default_status: RUNNING, catch_up: false, declarative: false}
""",
        "web": """
  name: web
  translation: {key_prefix: web}
  quality: {default_checks: false}
  automation: {schedules: false}
""",
    }.items():
        folder = project / module / "defs" / name
        folder.mkdir()
        header = f"type: pipelines.SQLMeshProjectComponent\nattributes:\n  project: ../../../sqlmesh/{name}"
        (folder / "defs.yaml").write_text(header + attributes)
    defs = dg.load_from_defs_folder(project_root=project)
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["shop", "sales", "daily_orders"]))
    assert node.group_name == "orders_sales"
    assert node.tags["team"] == "sales_team" and "team:sales" in node.owners
    checks = {k.asset_key.path[0]: set() for k in graph.asset_check_keys}
    for check_key in graph.asset_check_keys:
        checks[check_key.asset_key.path[0]].add(check_key.name)
    assert "volume_anomaly" in checks["shop"] and "volume_anomaly" not in checks["web"]
    assert "not_null" in checks["web"]  # the SQLMesh audits stay
    volume_key = dg.AssetCheckKey(dg.AssetKey(["shop", "sales", "daily_orders"]), "volume_anomaly")
    volume = graph.get_check_spec(volume_key)
    assert volume.blocking  # severity ERROR from the component's quality defaults
    repo = defs.get_repository_def()
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["orders_scheduled_daily_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert not any(name.startswith("web_") for name in schedules)
    sensors = {s.name for s in repo.sensor_defs}
    assert "web_catch_up" in sensors and "web_sqlmesh_automation" in sensors
    assert "orders_catch_up" not in sensors and "orders_sqlmesh_automation" not in sensors


def test_a_plan_in_a_prefixed_project_is_seen_on_the_translators_keys(team: tuple[Path, str]) -> None:
    """The plan job records what it rebuilt as materializations of the prefixed assets, under the
    new code version, and its release observations land on those keys too."""
    project, module = team
    folder = project / module / "defs" / "orders"
    folder.mkdir()
    (folder / "defs.yaml").write_text(
        "type: pipelines.SQLMeshProjectComponent\nattributes:\n  project: ../../../sqlmesh/orders\n"
        "  name: orders\n  translation: {key_prefix: orders}\n"
    )
    daily = dg.AssetKey(["orders", "sales", "daily_orders"])
    job = dg.define_asset_job("daily", selection=[daily])
    range_tags = {
        "dagster/asset_partition_range_start": "2026-01-01",
        "dagster/asset_partition_range_end": "2026-01-03",
    }
    with dg.instance_for_test() as instance:
        defs = dg.Definitions.merge(
            dg.load_from_defs_folder(project_root=project), dg.Definitions(jobs=[job])
        )
        assert defs.resolve_job_def("daily").execute_in_process(instance=instance, tags=range_tags).success
        models = project / "sqlmesh" / "orders" / "models" / "daily_orders.sql"
        models.write_text(models.read_text().replace("i * 10 AS amount", "i * 100 AS amount"))
        defs = dg.load_from_defs_folder(project_root=project)
        version = defs.resolve_assets_def(daily).specs_by_key[daily].code_version
        plan = defs.resolve_job_def("orders_sqlmesh_plan").execute_in_process(
            instance=instance,
            run_config={"ops": {"apply_orders_sqlmesh_plan": {"config": {"allow_breaking": True}}}},
        )
        assert plan.success
        said = [r.user_message for r in instance.all_logs(plan.run_id) if r.user_message]
        assert any("no raw contracts declared for this project" in m for m in said)
        built = {
            e.step_materialization_data.materialization.partition: e.step_materialization_data.materialization
            for e in plan.get_asset_materialization_events()
            if e.asset_key == daily
        }
        assert set(built) == {"2026-01-01", "2026-01-02", "2026-01-03"}
        assert {m.tags["dagster/code_version"] for m in built.values()} == {version}
        observed = [e.asset_key for e in plan.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert daily in observed and all(key.path[0] == "orders" for key in observed)
        # a rerun of the plan changes nothing and records nothing twice
        again = defs.resolve_job_def("orders_sqlmesh_plan").execute_in_process(instance=instance)
        assert again.success and not again.get_asset_materialization_events()
