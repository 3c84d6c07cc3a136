"""One truth for defaults: docs/automation.md's table of what starts running is the definitions'.

The README links to that table instead of restating it; this test fails when a schedule or sensor
is added, renamed, or has its default status changed without the table following (or the other
way round).
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "automation.md"


def documented_defaults() -> dict[str, str]:
    """name -> 'running' / 'stopped' from the table under '## What runs when'."""
    section = DOC.read_text().split("## What runs when", 1)[1].split("\n## ", 1)[0]
    defaults = {}
    for row in re.findall(r"^\|(.+)\|$", section, flags=re.M):
        cells = [c.strip() for c in row.split("|")]
        status = cells[2].strip("* ").lower() if len(cells) > 2 else ""
        if status not in ("running", "stopped"):
            continue  # header, separator, jobs
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if "<" not in name:  # the pattern `scheduled_<cadence>_schedule`; its example is listed
                defaults[name] = status
    return defaults


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> dg.RepositoryDefinition:
    tmp = tmp_path_factory.mktemp("defaults")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIPELINES_ENV", "local")
        env.setenv("PIPELINES_DATA_DIR", str(tmp / "data"))
        env.setenv("PIPELINES_LAKE_URI", str(tmp / "lake"))
        env.delenv("SQLMESH_PROJECT_DIR", raising=False)
        env.delenv("SQLMESH_GATEWAY", raising=False)
        from pipelines.definitions import build_definitions
        from pipelines.platform.settings import Settings

        # the repository, not the Definitions: it includes sensors Dagster adds by itself
        return build_definitions(Settings.from_env()).get_repository_def()


def test_docs_state_exactly_what_starts_running(repository: dg.RepositoryDefinition) -> None:
    defined = {
        **{s.name: s.default_status.value.lower() for s in repository.schedule_defs},
        **{s.name: s.default_status.value.lower() for s in repository.sensor_defs},
    }
    assert documented_defaults() == defined


def test_readme_links_to_the_table_instead_of_restating_it() -> None:
    readme = (REPO / "README.md").read_text()
    assert "docs/automation.md#what-runs-when" in readme
    assert "starts stopped" not in readme.replace("what starts stopped", "")


def test_the_table_parser_reads_statuses() -> None:
    defaults = documented_defaults()
    assert defaults["run_failure_alerts"] == "running" and defaults["catch_up"] == "stopped"
    assert {"audit_trail_success", "audit_trail_failure", "audit_trail_canceled"} <= set(defaults)
