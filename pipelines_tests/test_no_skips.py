"""``--no-skips`` (CI's prod-stack job): a test that skips for a missing service fails instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_skip_fails_under_no_skips_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from pipelines_tests.conftest import pytest_addoption, pytest_runtest_makereport  # noqa: F401\n"
    )
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture\ndef server():\n    pytest.skip('pgbouncer is not installed')\n\n"
        "def test_in_a_fixture(server):\n    pass\n\n"
        "def test_in_the_body():\n    pytest.skip('no TLS PostgreSQL')\n\n"
        "def test_that_passes():\n    pass\n"
    )

    def pytest_run(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *extra,
        ]
        return subprocess.run(
            [*command, str(tmp_path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )

    plain = pytest_run()
    assert plain.returncode == 0 and "1 passed, 2 skipped" in plain.stdout, plain.stdout
    strict = pytest_run("--no-skips")
    assert strict.returncode == 1, strict.stdout
    assert "1 failed, 1 passed, 1 error" in strict.stdout  # the fixture's skip fails its setup
    assert "pgbouncer is not installed" in strict.stdout
