"""The bridge's project cache: keyed by what defines the models, never by data; loads offline."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_sqlmesh_bridge.project import load_project, project_hash
from pipelines_tests.sqlmesh_projects import DAILY_SOURCE, write_multi_repo

CONFIG_PY = """\
from sqlmesh.core.config import Config, GatewayConfig, ModelDefaultsConfig
from sqlmesh.core.config.connection import DuckDBConnectionConfig

from bridge_helper import START

config = Config(
    gateways={{"local": GatewayConfig(connection=DuckDBConnectionConfig(database={db!r}))}},
    default_gateway="local",
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start=START),
)
"""


def write_local_project(root: Path) -> Path:
    """A project whose warehouse (and SQLMesh state) is a DuckDB file inside its own folder, and
    whose config.py imports a helper module that lives elsewhere."""
    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "daily_source.sql").write_text(DAILY_SOURCE)
    (project / "config.py").write_text(CONFIG_PY.format(db=str(project / "db.duckdb")))
    helpers = root / "helpers"
    helpers.mkdir()
    (helpers / "bridge_helper.py").write_text("START = '2026-01-01'\n")
    return project


@pytest.fixture
def local_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path / "helpers"))
    yield write_local_project(tmp_path)
    sys.modules.pop("bridge_helper", None)  # config.py imported this test's copy


def test_data_logs_and_caches_are_not_part_of_the_key(local_project: Path, tmp_path: Path) -> None:
    before = project_hash([local_project], None, exclude=[local_project / "data"])
    (local_project / "db.duckdb").write_bytes(b"written by a run")
    (local_project / "db.duckdb.wal").write_bytes(b"x")
    (local_project / "other.db").write_bytes(b"x")
    (local_project / "logs").mkdir()
    (local_project / "logs" / "sqlmesh.log").write_text("x")
    (local_project / ".cache").mkdir()
    (local_project / ".cache" / "anything").write_text("x")
    (local_project / "data").mkdir()
    (local_project / "data" / "lake.parquet").write_bytes(b"x")
    assert project_hash([local_project], None, exclude=[local_project / "data"]) == before
    (local_project / "models" / "daily_source.sql").write_text(DAILY_SOURCE.replace("i * 10", "i * 11"))
    assert project_hash([local_project], None, exclude=[local_project / "data"]) != before


def test_key_covers_imported_modules_gateway_version_and_every_repo(
    local_project: Path, tmp_path: Path
) -> None:
    before = project_hash([local_project], None)
    (tmp_path / "helpers" / "bridge_helper.py").write_text("START = '2026-02-01'\n")
    changed = project_hash([local_project], None)
    assert changed != before  # a module config.py imports, outside the project
    assert project_hash([local_project], "other") != changed  # the gateway
    assert project_hash([local_project], None, salt="prod") != changed  # the caller's environment
    repos = write_multi_repo(tmp_path / "multi")
    multi = project_hash(repos, None)
    (repos[1] / "models" / "totals.sql").write_text("MODEL (name b.totals, kind FULL); SELECT 1 AS x")
    assert project_hash(repos, None) != multi  # any repository of a multi-repo project


def test_an_unchanged_project_loads_from_one_cache_entry_after_writes(
    local_project: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = load_project(local_project, cache_dir=cache)
    (local_project / "db.duckdb").write_bytes(b"")  # what a run leaves behind
    second = load_project(local_project, cache_dir=cache)
    assert first == second and len(list(cache.glob("project-*.json"))) == 1
    (tmp_path / "helpers" / "bridge_helper.py").write_text("START = '2026-02-01'\n")
    sys.modules.pop("bridge_helper", None)  # a new code-location process imports it afresh
    third = load_project(local_project, cache_dir=cache)
    assert len(list(cache.glob("project-*.json"))) == 2
    assert next(iter(third.models.values())).start.startswith("2026-02-01")


HOLD_LOCK = """\
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x")
print("locked", flush=True)
time.sleep(120)
"""


def test_load_never_opens_the_warehouse(local_project: Path, tmp_path: Path) -> None:
    """Another process holds the DuckDB write lock (a run): loading still works, with the same
    fingerprints SQLMesh computes for a plan."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(local_project / "db.duckdb")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        info = load_project(local_project, use_cache=False)
    finally:
        holder.kill()
        holder.wait()
    model = info.models['"db"."demo"."daily_source"']
    assert info.default_catalog == "db" and model.fingerprint
    from sqlmesh import Context

    time.sleep(0.1)
    ctx = Context(paths=str(local_project))
    try:
        assert ctx.snapshots['"db"."demo"."daily_source"'].fingerprint.to_identifier() == model.fingerprint
    finally:
        ctx.close()
