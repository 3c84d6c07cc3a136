"""The platform's resources, chosen per deployment from ``PIPELINES_ENV``; secrets only via
``dg.EnvVar``. Each is built once per process, so every component of a code location shares the
same object (Dagster merges equal resource keys only when they are the same object)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import dagster as dg

from pipelines.platform.lake import Lake
from pipelines.platform.settings import Settings


class LakeResource(dg.ConfigurableResource):
    """The lake root: a local folder or ``s3://bucket/prefix`` (AWS_* variables for S3)."""

    uri: str

    def get(self) -> Lake:
        return Lake(self.uri)


@lru_cache(maxsize=8)
def lake_resource(uri: str) -> LakeResource:
    return LakeResource(uri=uri)


def shared_resources(settings: Settings) -> dict[str, object]:
    """What every part of the code location may use: the lake (releases, reports, repair)."""
    return {"lake": lake_resource(settings.lake_uri)}


def sqlmesh_resource(
    settings: Settings,
    project_dirs: Sequence[Path] | None = None,
    gateway: str | None = None,
    environment: str = "prod",
) -> object:
    """The SQLMesh resource of one project (several paths: a multi-repo project).

    One DuckDB file has one writer: locally, SQLMesh runs of this machine queue behind a file
    lock. Prod has several writers: runs go on concurrently, and plan application (creating the
    environment, the sqlmesh_plan job) is serialized by an advisory lock on the SQLMesh state
    database, whose connection (and password) comes from the gateway, read from the environment.
    """
    from dagster_sqlmesh_bridge.resource import SQLMeshResource

    dirs = [Path(d) for d in project_dirs] if project_dirs else [settings.sqlmesh_project_dir]
    return SQLMeshResource(
        project_dir=str(dirs[0]),
        extra_project_dirs=[str(d) for d in dirs[1:]],
        gateway=gateway if gateway is not None else settings.sqlmesh_gateway,
        environment=environment,
        lock_file=None if settings.env == "prod" else str(settings.data_dir / "sqlmesh.lock"),
    )


def build_resources(settings: Settings) -> dict[str, object]:
    """The lake and the configured project's SQLMesh resource."""
    return {**shared_resources(settings), "sqlmesh": sqlmesh_resource(settings)}
