"""The repository's commands resolve their paths from the repository root wherever in it they are
started: ``cd docs && uv run pipelines demo`` builds and reports from the root's ``.data/``.

The fast tests start from ``docs/`` of this checkout and only compute paths; the demo runs as the
README runs it, in a fresh clone (``test_fresh_clone.py``'s way), from the clone's ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.ops import cli
from pipelines.platform.settings import Settings, local_path, local_root
from pipelines_tests.test_fresh_clone import Clone, problems, user_env

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


@pytest.fixture
def in_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PIPELINES_DATA_DIR", "PIPELINES_LAKE_URI", "PIPELINES_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", "")  # unset for the command; restored afterwards
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    monkeypatch.chdir(DOCS)


@pytest.mark.usefixtures("in_docs")
def test_settings_and_commands_resolve_from_the_root_in_a_subfolder(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_root() == REPO
    settings = Settings.from_env()
    assert settings.data_dir == REPO / ".data"
    assert settings.lake_uri == str(REPO / ".lake")
    monkeypatch.setenv("PIPELINES_DATA_DIR", "elsewhere/data")  # any relative value, as SQLMesh's config
    assert Settings.from_env().data_dir == REPO / "elsewhere" / "data"
    assert local_path("/abs/olute") == Path("/abs/olute")

    assert cli._dagster_home() == REPO  # its dagster.yaml: pools, telemetry off
    command, cwd = cli.ui_command("127.0.0.1", 3000)
    assert cwd == REPO and command[1:4] == ["dev", "-w", str(REPO / "workspace.yaml")]
    fill = cli.build_parser().parse_args(["fill-values", "--outputs", "cdk-outputs.json"])
    assert fill.values == str(REPO / "helm-values.yaml") and Path(fill.values).is_file()
    assert fill.outputs == "cdk-outputs.json"  # a path the user types stays the shell's


def test_outside_any_project_the_checkout_is_the_root(tmp_path: Path) -> None:
    assert local_root(tmp_path) == REPO  # `uv run --project <checkout> pipelines ...` from /tmp
    team = tmp_path / "team"
    (team / "src").mkdir(parents=True)
    (team / "pyproject.toml").write_text("[project]\nname = 'team'\n")
    assert local_root(team / "src") == team  # a team's own project keeps its own .data/


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clone]:
    root = tmp_path_factory.mktemp("subfolder") / "pipelines"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True, timeout=120)
    env = user_env()
    subprocess.run(["uv", "sync", "--frozen", "--quiet"], cwd=root, env=env, check=True, timeout=600)
    yield Clone(root, env)


@pytest.mark.slow  # the demo: ~35 s on an idle machine
@pytest.mark.timeout(1500)
def test_the_demo_started_in_docs_builds_and_reports_from_the_roots_data(clone: Clone) -> None:
    docs = clone.root / "docs"
    demo = clone.run("pipelines", "demo", cwd=docs, timeout=1200)
    assert "Run succeeded" in demo.stdout, demo.stdout[-3000:]
    assert str(clone.root / ".data" / "warehouse.duckdb") in demo.stdout
    days = re.findall(r"^\s+\d{4}-\d{2}-\d{2}: (\d+) orders", demo.stdout, flags=re.M)
    assert len(days) == 3  # the report read the warehouse the run built
    assert (clone.root / ".data" / "warehouse.duckdb").is_file() and (clone.root / ".lake").is_dir()
    assert sorted(p.name for p in docs.iterdir() if p.name.startswith(".")) == []
    assert (clone.root / "storage").is_dir()  # DAGSTER_HOME: the root, whose dagster.yaml applies
    assert problems(demo.stderr) == []
    assert clone.untracked() == []
