"""A gateway's relative DuckDB files (``sqlmesh init`` writes ``database: db.db``) are the project
folder's, as ``sqlmesh`` run in that folder opens them, wherever Dagster or the CLI was started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from dagster_sqlmesh_bridge.context_setup import project_configs
from pipelines_tests.sqlmesh_projects import write_init_style_project

CATALOGS = """\
gateways:
  local:
    connection:
      type: duckdb
      catalogs:
        main_db: data/main.duckdb
        absolute: {absolute}
        memory: ':memory:'
        lake:
          type: ducklake
          path: 'ducklake:sqlite:meta/lake.sqlite'
          data_path: lake_files/
        remote_lake:
          type: ducklake
          path: 'postgres:dbname=lake host=db.internal'
          data_path: 's3://bucket/lake/'
    state_connection:
      type: postgres
      host: db.internal
      port: 5432
      user: sqlmesh
      password: secret
      database: state
default_gateway: local
model_defaults:
  dialect: duckdb
"""


def test_relative_files_resolve_against_the_project_and_nothing_else_changes(tmp_path: Path) -> None:
    init_style = write_init_style_project(tmp_path / "init")
    (config,) = project_configs([init_style]).values()
    gateway = config.gateways["local"]
    assert gateway.connection.database == str(init_style / "db.db")
    assert gateway.state_connection.database == str(init_style / "state.db")

    project = tmp_path / "catalogs"
    (project / "models").mkdir(parents=True)
    (project / "config.yaml").write_text(CATALOGS.format(absolute=tmp_path / "elsewhere.duckdb"))
    (config,) = project_configs([project]).values()
    catalogs = config.gateways["local"].connection.catalogs
    assert catalogs["main_db"] == str(project / "data" / "main.duckdb")
    assert catalogs["absolute"] == str(tmp_path / "elsewhere.duckdb")
    assert catalogs["memory"] == ":memory:"
    assert catalogs["lake"].path == f"ducklake:sqlite:{project / 'meta' / 'lake.sqlite'}"
    assert catalogs["lake"].data_path == str(project / "lake_files")
    assert catalogs["remote_lake"].path == "postgres:dbname=lake host=db.internal"
    assert catalogs["remote_lake"].data_path == "s3://bucket/lake/"
    assert config.gateways["local"].state_connection.database == "state"  # PostgreSQL: a name


def test_pipelines_run_started_elsewhere_builds_and_names_the_project_folders_file(tmp_path: Path) -> None:
    project = write_init_style_project(tmp_path / "sqlmesh_project")
    started_in = tmp_path / "elsewhere"
    started_in.mkdir()
    dropped = ("DAGSTER_", "PIPELINES_", "SQLMESH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        {
            "SQLMESH_PROJECT_DIR": str(project),
            "PIPELINES_DATA_DIR": str(tmp_path / "data"),
            "PIPELINES_LAKE_URI": str(tmp_path / "lake"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.ops.cli", "run", "--start", "2026-01-01", "--end", "2026-01-03"],
        cwd=started_in, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    warehouse = project / "db.db"
    assert re.search(rf"warehouse \(project gateway\):\s+{re.escape(str(warehouse))}$", done.stdout, re.M), (
        done.stdout
    )
    assert (project / "state.db").is_file()
    assert not list(started_in.iterdir())  # nothing landed where the command was started
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM demo.orders").fetchone() == (6,)  # 3 days x 2 events
        assert con.sql("SELECT count(*) FROM customer1.some_table").fetchone() == (3,)
