"""A team's own ``dg`` project, laid out as ``uvx create-dagster project`` lays it out, and ways to
run it as a user does (``dg`` commands and Python in fresh processes, never this test process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DG = str(Path(sys.executable).parent / "dg")

# create-dagster's template (1.13): definitions.py loads the defs folder beside it
TEMPLATE_DEFINITIONS = """\
from pathlib import Path

from dagster import definitions, load_from_defs_folder


@definitions
def defs():
    return load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@dataclass
class TeamProject:
    root: Path
    module: str
    package: Path  # the folder of the root module (``src/<module>`` in the template)
    env: dict[str, str]

    @property
    def defs(self) -> Path:
        return self.package / "defs"

    def declare(self, folder: str, yaml: str) -> Path:
        """A ``defs/<folder>/defs.yaml`` with ``yaml`` in it."""
        path = self.defs / folder / "defs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(yaml))
        return path

    def dg(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DG, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def python(
        self, script: str, *args: str, cwd: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """``script`` in a fresh interpreter of this environment (nothing imported before it)."""
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def create_dagster_project(
    root: Path, tmp: Path, module: str = "team", src_layout: bool = True
) -> TeamProject:
    """A dg project in ``root``; its platform data (lake, data folder, Dagster home) under ``tmp``."""
    package = root / "src" / module if src_layout else root / module
    (package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{module}"
            version = "0.1.0"
            requires-python = ">=3.10,<3.15"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "{module}"
            """
        )
    )
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(TEMPLATE_DEFINITIONS)
    for name in ("data", "lake", "dagster_home"):
        (tmp / name).mkdir(parents=True, exist_ok=True)
    dropped = ("DAGSTER_", "PIPELINES_", "SQLMESH_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(package.parent), str(REPO)]),
            "PIPELINES_DATA_DIR": str(tmp / "data"),
            "PIPELINES_LAKE_URI": str(tmp / "lake"),
            "DAGSTER_HOME": str(tmp / "dagster_home"),
            "NO_COLOR": "1",
        }
    )
    (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return TeamProject(root, module, package, env)
