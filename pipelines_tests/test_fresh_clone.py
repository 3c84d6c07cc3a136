"""The README's commands, run as a new user runs them: in a fresh ``git clone``, nothing set.

Each command runs in a subprocess from a temporary clone of this repository (its committed
``HEAD``), with ``uv run`` and an environment stripped of every ``DAGSTER_*``, ``PIPELINES_*``
and ``SQLMESH_*`` variable. ``uv sync --frozen`` builds the clone's own virtualenv from uv's cache
(seconds once the suite's own ``uv sync`` has filled it). The fast part (``dg check defs``,
``dg list defs``, ``sqlmesh info``) runs by default; the demo, the SQLMesh CLI on its results and
``dagster dev`` are slow-marked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines_tests.ui_server import free_port

REPO = Path(__file__).resolve().parents[1]
PROJECT = Path("pipelines") / "shop" / "sqlmesh_project"
# stderr lines a user can act on or that are plain progress, each with its reason
PROGRESS = re.compile(r" - (DEBUG|INFO) - ")  # Dagster's run log goes to stderr
PROBLEM = re.compile(r"Warning\b|WARNING|ERROR|CRITICAL|Traceback|[Ee]xception")


@dataclass
class Clone:
    root: Path
    env: dict[str, str]

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["uv", "run", "--frozen", *args],
            cwd=cwd or self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
        return done

    def untracked(self) -> list[str]:
        """Files the commands left behind that .gitignore does not cover."""
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return status.splitlines()


def problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if PROBLEM.search(line) and not PROGRESS.search(line)]


def user_env() -> dict[str, str]:
    """This process's environment minus everything the README does not ask a user to set."""
    dropped = ("DAGSTER_", "PIPELINES_", "SQLMESH_", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clone]:
    if shutil.which("uv") is None or shutil.which("git") is None:
        pytest.fail("uv and git are needed to test a fresh clone")
    tmp = tmp_path_factory.mktemp("fresh")
    root = tmp / "pipelines"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True, timeout=120)
    env = user_env()
    subprocess.run(["uv", "sync", "--frozen", "--quiet"], cwd=root, env=env, check=True, timeout=600)
    yield Clone(root, env)


def test_no_tracked_file_matches_gitignore() -> None:
    """Caches and logs stay out of the repository (`git rm --cached` what this lists)."""
    tracked_but_ignored = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked_but_ignored == []


def test_dg_check_and_list_defs(clone: Clone) -> None:
    checked = clone.run("dg", "check", "defs")
    assert "All definitions loaded successfully" in checked.stdout
    listed = clone.run("dg", "list", "defs", env={"COLUMNS": "300"})  # a wide table: nothing cut
    assert "marts/daily_revenue" in listed.stdout and "sqlmesh_janitor_daily" in listed.stdout
    assert problems(checked.stderr + listed.stderr) == []


def test_sqlmesh_cli_in_the_project_uses_the_repository_data_dir(clone: Clone) -> None:
    info = clone.run("sqlmesh", "info", cwd=clone.root / PROJECT)
    assert "Data warehouse connection succeeded" in info.stdout
    assert (clone.root / ".data" / "warehouse.duckdb").exists()
    assert not (clone.root / PROJECT / ".data").exists()
    assert clone.untracked() == []


@pytest.mark.slow  # the demo (~35 s) and dagster dev (~40 s) on an idle machine
@pytest.mark.timeout(1200)
def test_demo_then_the_sqlmesh_cli_and_dagster_dev_see_the_same_warehouse(clone: Clone) -> None:
    demo = clone.run("pipelines", "demo", timeout=900)
    assert "Run succeeded" in demo.stdout
    assert f"{clone.root / '.data' / 'warehouse.duckdb'}" in demo.stdout
    days = re.findall(r"^\s+\d{4}-\d{2}-\d{2}: (\d+) orders", demo.stdout, flags=re.M)
    assert len(days) == 3
    assert problems(demo.stderr) == []

    project = clone.root / PROJECT
    environments = clone.run("sqlmesh", "environments", cwd=project)
    assert re.search(r"\bprod\b", environments.stdout), environments.stdout
    count = clone.run("sqlmesh", "fetchdf", "select count(*) from marts.daily_revenue", cwd=project)
    assert re.search(r"\b3\b", count.stdout.splitlines()[-1]), count.stdout
    assert problems(environments.stderr + count.stderr) == []

    port = free_port()
    log = clone.root.parent / "dagster-dev.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["uv", "run", "--frozen", "dagster", "dev", "-p", str(port)],
            cwd=clone.root,
            env=clone.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(2)
        assert server.poll() is None, log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGINT)  # what Ctrl+C does
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    output = log.read_text()
    assert "Serving dagster-webserver" in output, output
    expected = (
        # `dagster dev` itself tells the user to run `dg dev` instead (what the README names)
        "SupersessionWarning: Function `dev_command` is superseded",
        # a brand-new instance has no event-log cursor yet; Dagster's daemon says so once
        "EventLogConsumerDaemon - WARNING - No cursor for event type",
    )
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    unexpected = [line for line in problems(ansi.sub("", output)) if not any(e in line for e in expected)]
    assert unexpected == []
    assert clone.untracked() == []
