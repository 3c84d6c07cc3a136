"""The image starts warm: the Dockerfile's cache step, repeated on a copy of the image's /app, makes
a definitions load take the cached path (no SQLMesh Context is built). Docker cannot run here, so
the test lays out what the Dockerfile COPYs and runs its RUN line in that folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines_tests.test_dockerfile import dockerignored, instructions

REPO = Path(__file__).resolve().parents[1]

# Runs in the built layout: load the code location the way `dagster api grpc` does, counting
# SQLMesh Contexts (a spy on the public class; the cached path builds none).
LOAD_DEFINITIONS = """
import json, time
t0 = time.perf_counter()
import sqlmesh
built = []
_init = sqlmesh.Context.__init__
def _spy(self, *args, **kwargs):
    built.append(1)
    _init(self, *args, **kwargs)
sqlmesh.Context.__init__ = _spy
import pipelines, pipelines.definitions as d
assets = len(list(d.defs.resolve_asset_graph().get_all_asset_keys()))
print(json.dumps({"contexts": len(built), "seconds": time.perf_counter() - t0, "assets": assets,
                  "package": pipelines.__file__}))
"""


def _copy_build_context(app: Path) -> None:
    """What `COPY pyproject.toml uv.lock README.md ./` and `COPY pipelines/ ./pipelines/` bring."""
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(REPO / name, app / name)
    for src in (REPO / "pipelines").rglob("*"):
        rel = src.relative_to(REPO)
        if src.is_file() and not dockerignored(rel.as_posix()):
            dest = app / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def _cache_step() -> str:
    (step,) = [args for kw, args in instructions() if kw == "RUN" and "load_configured_project" in args]
    return step


def test_the_cache_step_keys_the_cache_as_the_pods_do() -> None:
    """The bridge cache is keyed by PIPELINES_ENV and the gateway: bake with the pods' values."""
    values = yaml.safe_load((REPO / "helm-values.yaml").read_text())
    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    step = _cache_step()
    assert (
        f"PIPELINES_ENV={env['PIPELINES_ENV']}" in step
        and f"SQLMESH_GATEWAY={env['SQLMESH_GATEWAY']}" in step
    )
    assert "load_configured_project()" in step, "the cache is keyed exactly as the definitions load it"
    assert "rm -f /tmp/build-state.duckdb" in step, "the stand-in state does not stay in the image"
    run_lines = [args for kw, args in instructions() if kw == "RUN"]
    assert run_lines.index(step) == len(run_lines) - 1, "baked after everything it reads is in place"


@pytest.mark.slow
def test_the_built_layout_loads_definitions_from_the_baked_cache(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    _copy_build_context(app)
    project = app / "pipelines" / "shop" / "sqlmesh_project"
    assert not (project / ".cache").exists(), "caches are not copied in"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINES_", "SQLMESH_", "DAGSTER_"))}
    env.update({"PYTHONPATH": str(app), "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})

    # The Dockerfile's RUN line, as the shell runs it in the image (WORKDIR /app).
    started = time.perf_counter()
    subprocess.run(["sh", "-c", _cache_step()], cwd=app, env=env, check=True, timeout=300)
    bake_seconds = time.perf_counter() - started
    bridge = list(
        (app / "pipelines" / "shop" / "sqlmesh_project" / ".cache" / "dagster-bridge").glob("project-*.json")
    )
    assert len(bridge) == 1
    assert (app / "pipelines" / "shop" / "sqlmesh_project" / ".cache" / "model_definition").is_dir()
    states = list((app / "pipelines" / "defs" / ".local_defs_state").glob("*/state"))
    assert len(states) == 1 and "marts" in states[0].read_text(), "the component's state is baked"
    assert not list(Path("/tmp").glob("build-state.duckdb*")), "the stand-in state is removed"

    # A pod: the Helm values' environment, no database reachable (nothing listens on 9).
    pod_env = {
        **env,
        "PIPELINES_ENV": "prod",
        "SQLMESH_GATEWAY": "prod",
        "PIPELINES_LAKE_URI": "s3://acme-data-lake/prod",
        "PIPELINES_PG_HOST": "127.0.0.1",
        "PIPELINES_PG_PORT": "9",
        "PIPELINES_PG_USER": "pipelines",
        "PIPELINES_PG_PASSWORD": "unused-here",
        "PIPELINES_RATES_API_URL": "https://rates.invalid",
        "PIPELINES_PII_SALT": "pod-secret-salt",
        "SHOP_DB_HOST": "127.0.0.1",
        "SHOP_DB_NAME": "shop",
        "SHOP_DB_USER": "reader",
        "SHOP_DB_PASSWORD": "unused-here",
        "PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_DEFINITIONS],
        cwd=app,
        env=pod_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warm = json.loads(proc.stdout.strip().splitlines()[-1])
    assert warm["package"].startswith(str(app)), "loaded the copy, not the repository"
    assert warm["contexts"] == 0, "a definitions load from the built image must not render the project"
    assert warm["assets"] > 10
    print(f"image cache step: {bake_seconds:.1f} s")

    # The same load without the baked cache renders the project (with the build's stand-in state).
    shutil.rmtree(app / "pipelines" / "shop" / "sqlmesh_project" / ".cache")
    stand_in = {
        "SQLMESH__GATEWAYS__PROD__STATE_CONNECTION__TYPE": "duckdb",
        "SQLMESH__GATEWAYS__PROD__STATE_CONNECTION__DATABASE": str(tmp_path / "state.duckdb"),
    }
    cold_proc = subprocess.run(
        [sys.executable, "-c", LOAD_DEFINITIONS],
        cwd=app,
        env={**pod_env, **stand_in},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cold_proc.returncode == 0, cold_proc.stderr[-3000:]
    cold = json.loads(cold_proc.stdout.strip().splitlines()[-1])
    assert cold["contexts"] >= 1 and cold["assets"] == warm["assets"]
    print(
        f"definitions load without the baked cache: {cold['seconds']:.1f} s; "
        f"with it: {warm['seconds']:.1f} s "
        f"({cold['seconds'] / warm['seconds']:.1f}x)"
    )
