"""The local run lock dies with the run's process, even when SQLMesh forked workers during the run
(an orphaned worker used to keep it, and every later run waited forever)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HOLDER = """
import logging, multiprocessing, sys, time
from pathlib import Path
from dagster_sqlmesh_bridge.locks import file_lock

def worker():  # stands in for a SQLMesh loader worker forked while the run holds the lock
    time.sleep(120)

with file_lock(Path(sys.argv[1]), logging.getLogger()):
    child = multiprocessing.get_context("fork").Process(target=worker)
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def test_a_killed_run_releases_its_lock_although_its_forked_worker_lives_on(tmp_path: Path) -> None:
    lock = tmp_path / "sqlmesh.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    worker = int(holder.stdout.readline())
    try:
        with lock.open("a") as handle:
            with pytest.raises(BlockingIOError):  # held while the run lives
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.kill()
            holder.wait(timeout=30)
            os.kill(worker, 0)  # the forked worker outlived the run...
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...and the lock is free all the same
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
