"""Start and stop ``dg dev`` (what ``pipelines ui`` runs) on the repo's workspace, isolated in a temp dir.

The server runs from the repo root (exactly what a user types) but every byte it writes goes to
the temp dir: ``DAGSTER_HOME`` is a temp folder holding a copy of the repo's ``dagster.yaml``
(storage defaults to ``DAGSTER_HOME``; any relative ``base_dir``, which Dagster would resolve
against the working directory, i.e. the repo, is made absolute under it), and the warehouse,
SQLMesh state and lake point there too.

Shutdown is strict because a leaked webserver/daemon/run worker outlives the test session:
the server gets its own process group, which is terminated and then killed, and any process
still carrying this server's unique ``DAGSTER_HOME`` (a run worker that left the group) is
killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION_NAME = "pipelines"


class ServerError(RuntimeError):
    """The server did not come up, or a GraphQL request failed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def instance_config(repo_yaml: Path, home: Path) -> dict[str, Any]:
    """The repo's instance config with every ``base_dir`` made absolute under ``home``.

    Everything else (pools, run queue limits, retries, telemetry) stays as the repo has it, so
    the test exercises the configuration users get.
    """
    config: dict[str, Any] = yaml.safe_load(repo_yaml.read_text()) or {}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (str(home / v) if k == "base_dir" and isinstance(v, str) else rewrite(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return rewrite(config)


def relative_base_dirs(config: dict[str, Any]) -> list[str]:
    """``base_dir`` values that are not absolute (they would land in the working directory)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "base_dir" and isinstance(v, str) and not os.path.isabs(v):
                    found.append(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return found


@dataclass
class DagsterDev:
    """A running ``dagster dev``: its URL, home, output file and process."""

    process: subprocess.Popen[bytes]
    url: str
    home: Path
    log_path: Path
    env: dict[str, str]
    startup_output: str = ""

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """POST one GraphQL request; raise on transport or GraphQL errors, return ``data``."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        if not self.url.startswith("http://127.0.0.1:"):
            raise ServerError(f"not a local server: {self.url}")
        request = urllib.request.Request(  # noqa: S310 - checked above: http on 127.0.0.1
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(f"GraphQL HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
        if payload.get("errors"):
            raise ServerError(f"GraphQL errors: {json.dumps(payload['errors'])[:4000]}")
        return payload["data"]

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until the webserver answers and the code location has loaded (or failed)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"dagster dev exited with {self.process.returncode}:\n{self.output()}")
            try:
                data = self.graphql(LOCATION_STATUS, timeout=10)
                entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
                entry = entries.get(LOCATION_NAME)
                last = str({name: e["loadStatus"] for name, e in entries.items()})
                if entry and entry["loadStatus"] == "LOADED":
                    loaded = entry["locationOrLoadError"] or {}
                    if loaded.get("__typename") == "PythonError":
                        raise ServerError(
                            f"code location {LOCATION_NAME} failed to load: {loaded['message']}"
                        )
                    return
            except (OSError, ServerError) as exc:
                if "failed to load" in str(exc):
                    raise
                last = str(exc)
            time.sleep(1)
        raise ServerError(f"dagster dev not ready after {timeout}s ({last}):\n{self.output()[-6000:]}")

    def stop(self, grace: float = 30) -> None:
        """Terminate the process group, kill what remains, then any stray process of this home."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for pid in processes_with_env("DAGSTER_HOME", str(self.home)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of this user's processes whose environment has ``name=value`` (Linux /proc)."""
    wanted = f"{name}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def server_env(root: Path) -> dict[str, str]:
    """The environment of an isolated local deployment under ``root``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIPELINES_", "SQLMESH_", "DAGSTER_", "AWS_"))
    }
    env.update(
        {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "PIPELINES_ENV": "local",
            "PIPELINES_DATA_DIR": str(root / "data"),
            "PIPELINES_LAKE_URI": str(root / "lake"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextlib.contextmanager
def dagster_dev(
    root: Path, extra_env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[DagsterDev]:
    """``dg dev -w workspace.yaml`` from the repo root, isolated under ``root``."""
    env = {**server_env(root), **(extra_env or {})}
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    config = instance_config(REPO_ROOT / "dagster.yaml", home)
    if relative_base_dirs(config):
        raise ServerError(f"relative base_dir left in the instance config: {relative_base_dirs(config)}")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log_path = root / "dagster-dev.log"
    cmd = [
        str(Path(sys.executable).with_name("dg")), "dev",
        "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = DagsterDev(process, f"http://127.0.0.1:{port}", home, log_path, env)
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()
