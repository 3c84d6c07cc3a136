"""``dg scaffold defs dagster_sqlmesh_bridge.SQLMeshProjectComponent NAME --project-path PATH``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg
from pydantic import BaseModel


def name_for_folder(folder: str) -> str:
    """A component ``name`` (letters, digits, underscores, a letter first) from a defs folder's name."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", folder).strip("_") or "sqlmesh"
    return (name if name[0].isalpha() else f"p_{name}")[:63]


class SQLMeshScaffoldParams(BaseModel):
    project_path: str | None = None


class SQLMeshProjectScaffolder(dg.Scaffolder[SQLMeshScaffoldParams]):
    """Writes a ``defs.yaml`` whose ``project`` points (relatively) at an existing SQLMesh project,
    named after the new folder so a second project never collides with the first."""

    @classmethod
    def get_scaffold_params(cls) -> type[SQLMeshScaffoldParams]:
        return SQLMeshScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[SQLMeshScaffoldParams]) -> None:
        if request.params.project_path is None:
            raise ValueError("--project-path: name the folder of an existing SQLMesh project")
        base = request.project_root or Path.cwd()
        project = (base / request.params.project_path).resolve()
        if not (project / "config.yaml").exists() and not (project / "config.py").exists():
            raise ValueError(
                f"--project-path: {project} is not a SQLMesh project (no config.yaml or config.py)"
            )
        target = request.target_path.resolve()
        name = name_for_folder(target.name)
        dg.scaffold_component(
            request,
            {
                "project": os.path.relpath(project, start=target),
                "name": name,
                "translation": {"key_prefix": name},
            },
        )
