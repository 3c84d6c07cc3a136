"""The production topology on one machine (issue 38, docs/production.md "Run here as deployed").

EKS's shape with podman instead of Kubernetes: the code location's gRPC server, the webserver
and the daemon each run in a container of the image, on the host's network (PostgreSQL and the
S3 server listen on its loopback); the daemon's ``DockerRunLauncher``
(``deploy/dagster-podman.yaml``) talks to ``podman system service``'s Docker-compatible socket and
starts one container per run from the image the code location names. Secrets reach the
containers only as environment variables (``-e``, and the launcher's ``env_vars``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

from pipelines_tests.test_image_build import AS_THE_POD, RUN, _env_args
from pipelines_tests.test_ui import wait_for_daemons
from pipelines_tests.ui_server import LOCATION_NAME, DagsterDev, ServerError, free_port

REPO = Path(__file__).resolve().parents[1]
INSTANCE_YAML = REPO / "deploy" / "dagster-podman.yaml"
HOME_IN_IMAGE = "/opt/dagster/dagster_home"  # the image's DAGSTER_HOME (Dockerfile)
SOCKET_IN_IMAGE = "/run/podman/podman.sock"
REPOSITORY = "__repository__"  # the name Dagster gives a Definitions object's repository

# Containers the Docker API creates take podman's defaults: runc and ulimits the sandbox allows
# (crun fails on hybrid cgroups; the default ulimits fail setrlimit), as deploy/build-image.sh.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


@dataclass
class Topology:
    """The running services: ``ui`` is the webserver (GraphQL), ``home`` its DAGSTER_HOME (mounted
    into the webserver and daemon), ``started`` how long each service took to come up."""

    image: str
    home: Path
    ui: DagsterDev
    socket: Path
    started: dict[str, float] = field(default_factory=dict)


def podman_service(root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``podman system service`` on a socket under ``root`` (the daemon's DOCKER_HOST)."""
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    sock = root / "podman.sock"
    log = (root / "podman-service.log").open("wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],
        env={**os.environ, "CONTAINERS_CONF": str(conf)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"podman system service exited: {(root / 'podman-service.log').read_text()}")
        if sock.exists():
            with contextlib.suppress(docker.errors.DockerException):
                if docker.DockerClient(base_url=f"unix://{sock}").ping():
                    # the daemon's container runs as uid 10001 (the Helm values' user)
                    sock.chmod(0o666)
                    return proc, sock
        time.sleep(0.5)
    proc.kill()
    raise ServerError("podman system service did not answer on its socket in 60 s")


def container(
    name: str, image: str, env: Mapping[str, str], command: list[str], log: Path, mounts: list[str] = ()
) -> subprocess.Popen[bytes]:
    """One service container on the host network, as the pod's user; attached, output to ``log``."""
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*RUN, "--name", name, "--network", "host", *AS_THE_POD, *volumes, *_env_args(dict(env)),
             image, *command],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for_line(process: subprocess.Popen[bytes], log: Path, line: str, timeout: float) -> None:
    """Wait until a service container's output says ``line`` (the webserver loads the code
    location once, when it starts: it must find the gRPC server serving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if line in text:
            return
        if process.poll() is not None:
            raise ServerError(f"container exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(1)
    raise ServerError(f"no {line!r} after {timeout:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


def remove_containers(names: list[str]) -> None:
    """Remove the containers this topology started, by name or id (none other)."""
    if names:
        subprocess.run(["podman", "rm", "--force", "--time", "5", *names], capture_output=True, timeout=120)


@contextlib.contextmanager
def topology(
    image: str,
    root: Path,
    settings: Mapping[str, str],
    dagster_env: Mapping[str, str],
    before_daemon: Callable[[DagsterDev], None] | None = None,
) -> Iterator[Topology]:
    """Start the code server, the webserver and (after ``before_daemon(webserver)``) the daemon;
    remove them and the run containers at the end.

    ``settings``: the code location's environment (also passed to every run by the launcher's
    ``env_vars``, read from the daemon's environment). ``dagster_env``: the instance's
    (``DAGSTER_PG_*``, compute logs, ``AWS_*``).
    """
    tag = uuid.uuid4().hex[:8]
    home = root / "dagster_home"
    home.mkdir()
    home.chmod(0o777)  # written by the image's uid 10001
    (home / "dagster.yaml").write_text(INSTANCE_YAML.read_text())
    grpc_port, web_port = free_port(), free_port()
    workspace = {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": grpc_port,
                                                "location_name": LOCATION_NAME}}]}  # fmt: skip
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    service, sock = podman_service(root)
    names: list[str] = []
    ui: DagsterDev | None = None
    try:
        started = {}
        t0 = time.monotonic()
        names.append(f"topology-{tag}-code")
        code = container(
            names[-1], image, {**settings, **dagster_env, "DAGSTER_CURRENT_IMAGE": image},
            ["dagster", "api", "grpc", "--module-name", "pipelines.definitions",
             "--host", "127.0.0.1", "--port", str(grpc_port)],
            root / "code-server.log",
        )  # fmt: skip
        wait_for_line(code, root / "code-server.log", "Started Dagster code server", timeout=300)
        names.append(f"topology-{tag}-webserver")
        web = container(
            names[-1], image, dagster_env,
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(web_port),
             "-w", f"{HOME_IN_IMAGE}/workspace.yaml"],
            root / "webserver.log", [f"{home}:{HOME_IN_IMAGE}"],
        )  # fmt: skip
        ui = DagsterDev(web, f"http://127.0.0.1:{web_port}", home, root / "webserver.log", dict(dagster_env))
        ui.wait_ready(timeout=300)
        started["code server and webserver"] = time.monotonic() - t0

        def start_daemon(meanwhile: Callable[[], None] | None = None) -> None:
            daemons = [n for n in names if n.startswith(f"topology-{tag}-daemon")]
            remove_containers(daemons)
            if meanwhile is not None:
                meanwhile()
            t0 = time.monotonic()
            names.append(f"topology-{tag}-daemon-{len(daemons)}")
            container(
                names[-1], image,
                {**settings, **dagster_env, "DOCKER_HOST": f"unix://{SOCKET_IN_IMAGE}"},
                ["dagster-daemon", "run", "-w", f"{HOME_IN_IMAGE}/workspace.yaml"],
                root / "daemon.log", [f"{home}:{HOME_IN_IMAGE}", f"{sock}:{SOCKET_IN_IMAGE}"],
            )  # fmt: skip
            wait_for_daemons(ui)
            started.setdefault("daemon", time.monotonic() - t0)

        start_daemon(None if before_daemon is None else lambda: before_daemon(ui))
        topo = Topology(image, home, ui, sock, started)
        yield topo
    finally:
        with contextlib.suppress(Exception):  # the run containers too, by the ids their runs name
            assert ui is not None
            results = ui.graphql("{ runsOrError { ... on Runs { results { tags { key value } } } } }")
            names += [c for r in results["runsOrError"]["results"] if (c := container_of(r))]
        remove_containers(names)
        service.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=30)
        if service.poll() is None:
            service.kill()


def container_of(run: Mapping[str, Any]) -> str:
    """The container id the DockerRunLauncher tagged the run with."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    return tags.get("docker/container_id", "")


def inspect(container_id: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "inspect", container_id], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ServerError(f"podman inspect {container_id}: {out.stderr}")
    (info,) = json.loads(out.stdout)
    return info
