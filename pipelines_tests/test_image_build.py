"""The image builds here and runs: ``deploy/build-image.sh`` makes a Debian base with debootstrap
and builds the Dockerfile on it with podman, from Debian's and PyPI's packages only. The image
then loads the code location from its baked state (no SQLMesh Context, no network) and runs the
README's quick start (``pipelines demo``) as the Helm values' user.

Slow (minutes from nothing, under a minute once the layers are cached): ``.ci/prod-stack`` runs
it. Skipped only where podman is not installed; the script says what else is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from pipelines_tests.test_dockerfile import GRPC_CMD
from pipelines_tests.test_image_caches import LOAD_DEFINITIONS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "build-image.sh"
PODMAN = shutil.which("podman")

needs_podman = pytest.mark.skipif(
    PODMAN is None,
    reason="podman is not installed (apt-get install -y podman runc debootstrap): the image is not built",
)

# runc and these ulimits: crun and podman's default ulimits fail on some hosts (deploy/build-image.sh).
RUN = [
    "podman",
    "--runtime",
    "runc",
    "run",
    "--rm",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]
# The Helm values' pod and container security contexts: uid 10001, no capabilities, no escalation.
AS_THE_POD = ["--user", "10001:10001", "--cap-drop", "all", "--security-opt", "no-new-privileges"]
# The code location's environment in prod (helm-values.yaml), with no database reachable.
POD_ENV = {
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
}


def _env_args(env: dict[str, str]) -> list[str]:
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


@pytest.fixture(scope="module")
def image() -> str:
    """The script's image (its layers and base are reused when present)."""
    started = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"build-image.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (name,) = re.findall(r"^build-image: image (\S+)$", proc.stdout, re.M)
    base = "made" if "build-image: base " in proc.stdout else "reused"
    (built,) = re.findall(r"^build-image: (built in .*)$", proc.stdout, re.M)
    print(f"deploy/build-image.sh: {time.perf_counter() - started:.0f} s, base {base}; image {built}")
    return name


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_podman
def test_the_image_is_built_from_the_local_base_and_runs_as_the_app_user(image: str) -> None:
    (info,) = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
        ).stdout
    )
    config = info["Config"]
    assert config["User"] == "app"
    assert config["Cmd"] == GRPC_CMD.split()
    env = dict(item.split("=", 1) for item in config["Env"])
    git = ["git", "-C", str(REPO), "rev-parse"]
    head = subprocess.run([*git, "HEAD"], capture_output=True, text=True).stdout.strip()
    short = subprocess.run([*git, "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if image.endswith("-dirty") or not head:
        assert env["PIPELINES_GIT_COMMIT"] == "", "a dirty tree's image names no commit"
    else:
        assert env["PIPELINES_GIT_COMMIT"] == head and image.endswith(f":{short}")
    assert not {"PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"} & env.keys(), "the build's CA stays out"

    # Debian's Python (the local base), the user's DuckDB extensions, no secret left behind.
    probe = subprocess.run(
        [
            *RUN,
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "id -u; python -c 'import sys; print(sys.base_prefix, sys.version_info[:2])'; "
            "ls /home/app/.duckdb/extensions/*/*/; ls -A /run/secrets 2>/dev/null | wc -l",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split()
    assert lines[0] == "10001" and lines[1] == "/usr" and "(3, 11)" in probe.stdout, probe.stdout
    for name in ("httpfs", "ducklake", "postgres_scanner", "sqlite_scanner", "aws"):
        assert f"{name}.duckdb_extension" in lines, f"{name} not installed in the image: {probe.stdout}"
    assert lines[-1] == "0", "nothing is left under /run/secrets"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_podman
def test_the_image_loads_the_code_location_from_its_baked_state(image: str) -> None:
    """As a code-location pod starts: the baked bridge cache and component state, no SQLMesh
    Context, no network (DuckDB extensions and state are in the image)."""
    common = [*RUN, "--network", "none", *AS_THE_POD, *_env_args(POD_ENV), image]
    load = subprocess.run(
        [*common, "python", "-c", LOAD_DEFINITIONS], capture_output=True, text=True, timeout=300
    )
    assert load.returncode == 0, load.stderr[-3000:]
    loaded = json.loads(load.stdout.strip().splitlines()[-1])
    assert loaded["package"] == "/app/pipelines/__init__.py"
    assert loaded["contexts"] == 0, "the image re-read the SQLMesh project instead of its baked state"
    assert loaded["assets"] > 10
    check = subprocess.run([*common, "dg", "check", "defs"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "All definitions loaded successfully" in check.stdout + check.stderr, (
        check.stdout[-2000:] + check.stderr[-2000:]
    )
    print(f"definitions load in the image: {loaded['seconds']:.1f} s, {loaded['assets']} assets")


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_podman
def test_the_quick_start_runs_in_the_image(image: str, tmp_path: Path) -> None:
    """``pipelines demo`` (README) materializes every asset, offline, as the pod's user, writing
    only to a mounted folder."""
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)  # noqa: S103 -- written by the image's uid 10001, a throwaway folder
    env = {
        "PIPELINES_DATA_DIR": "/work/data",
        "PIPELINES_LAKE_URI": "/work/lake",
        "DAGSTER_HOME": "/work/dagster_home",
    }
    started = time.perf_counter()
    demo = subprocess.run(
        [
            *RUN,
            "--network",
            "none",
            *AS_THE_POD,
            "-v",
            f"{work}:/work",
            *_env_args(env),
            image,
            "pipelines",
            "demo",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0 and "Run succeeded" in out, out[-4000:]
    (materialized,) = re.findall(r"assets materialized: (\d+); checks run: (\d+), failed: (\d+)", out)
    assert int(materialized[0]) > 10 and int(materialized[1]) > 0 and materialized[2] == "0", materialized
    con = duckdb.connect(str(work / "data" / "warehouse.duckdb"), read_only=True)
    try:
        days, revenue = con.execute("SELECT count(*), sum(revenue_usd) FROM marts.daily_revenue").fetchone()
    finally:
        con.close()
    assert days == 3 and revenue > 0
    assert list((work / "lake").rglob("*.parquet")), "the raw Parquet landed in the mounted lake"
    print(f"pipelines demo in the image: {time.perf_counter() - started:.0f} s")


def test_the_script_says_what_is_missing(tmp_path: Path) -> None:
    """Without podman the script stops before doing anything and names the packages to install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname",):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    proc = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "podman is not installed: apt-get install -y podman runc debootstrap" in proc.stderr
