"""Run ``python -m pipelines.api`` as a real process on a free port, with its logs in a file."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ApiProcess:
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def api_process(env: Mapping[str, str], log: Path, timeout: float = 120) -> Iterator[ApiProcess]:
    """The API serving on 127.0.0.1 until the block ends; stdout and stderr go to ``log``."""
    port = free_port()
    full_env = {**env, "PIPELINES_API_HOST": "127.0.0.1", "PIPELINES_API_PORT": str(port)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.api"], cwd=REPO, env=full_env, stdout=out, stderr=out
        )
    server = ApiProcess(f"http://127.0.0.1:{port}", log, proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{server.url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, server.logs()[-3000:]
                assert time.monotonic() < deadline, f"API did not start in {timeout} s"
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)
