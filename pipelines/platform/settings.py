"""Deployment settings, read once from the environment.

Every knob a deployment turns is an environment variable so that the same image runs locally,
in CI and on EKS. Secrets are never read here: they stay in ``dg.EnvVar`` resources.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PACKAGE_DIR = Path(__file__).resolve().parents[1]
BUNDLED_SQLMESH_PROJECT = PACKAGE_DIR / "shop" / "sqlmesh_project"

Environment = Literal["local", "prod"]


class SettingsError(ValueError):
    """A setting has a value the platform cannot use."""


def local_root(cwd: Path | None = None) -> Path:
    """The folder relative local paths resolve from (``./.data``, ``./.lake``, ``DAGSTER_HOME``):
    the project a command runs in, i.e. the nearest folder upward from the working directory with
    a ``pyproject.toml`` (where ``uv run`` and ``dg`` find it). From any subfolder of this
    repository that is the repository's root, so ``uv run pipelines demo`` in ``docs/`` uses the
    same ``.data/`` as the SQLMesh CLI and ``dg dev``; a team's project uses its own root; the
    image's is ``/app``. Outside any project: the checkout this package sits in, else the
    working directory."""
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    checkout = PACKAGE_DIR.parent
    return checkout if (checkout / "pyproject.toml").is_file() else start


def local_path(value: str | Path, root: Path | None = None) -> Path:
    """``value`` as an absolute path, a relative one taken from ``local_root()``."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else (root or local_root()) / path).resolve()


# Settings with no safe production value: locally each falls back to a demo (embedded rates API,
# development salt, SQLite shop, ./.lake, localhost PostgreSQL, the project's local gateway); in
# prod a fallback would be silently wrong, so every one must be set. Name -> what it is.
PROD_REQUIRED: dict[str, str] = {
    "PIPELINES_LAKE_URI": "the lake root, s3://bucket/prefix",
    "SQLMESH_GATEWAY": "the SQLMesh gateway (prod for the bundled project)",
    "PIPELINES_RATES_API_URL": "the exchange-rates API",
    "PIPELINES_PII_SALT": "the PII hashing salt (secret)",
    "SHOP_DB_HOST": "the shop database host",
    "SHOP_DB_NAME": "the shop database name",
    "SHOP_DB_USER": "the shop database user",
    "SHOP_DB_PASSWORD": "the shop database password (secret)",
    "PIPELINES_PG_HOST": "the metadata PostgreSQL host (SQLMesh state, DuckLake catalog)",
    "PIPELINES_PG_USER": "the metadata PostgreSQL user",
    "PIPELINES_PG_PASSWORD": "the metadata PostgreSQL password (secret)",
}


def missing_production_settings(
    environ: Mapping[str, str] | None = None, names: Iterable[str] = PROD_REQUIRED
) -> list[str]:
    """The variables (of ``names``) prod needs that are unset or blank; none outside prod."""
    env = os.environ if environ is None else environ
    if env.get("PIPELINES_ENV", "local").strip() != "prod":
        return []
    return [name for name in names if not env.get(name, "").strip()]


def require_production_settings(
    environ: Mapping[str, str] | None = None, names: Iterable[str] = PROD_REQUIRED
) -> None:
    """Fail closed: in prod, one error naming every missing variable (never a demo fallback).
    The code location needs all of ``PROD_REQUIRED``; a reader (data API) only its subset."""
    missing = missing_production_settings(environ, names)
    if missing:
        lines = "".join(f"\n  {name}: {PROD_REQUIRED[name]}" for name in missing)
        raise SettingsError(
            f"PIPELINES_ENV=prod but {len(missing)} required setting(s) are unset "
            f"(see docs/production.md):{lines}"
        )


@dataclass(frozen=True)
class Settings:
    env: Environment
    lake_uri: str
    data_dir: Path
    sqlmesh_project_dir: Path
    sqlmesh_gateway: str | None
    demo_seed: bool

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_uri.startswith("s3://")

    @property
    def bundled_project(self) -> bool:
        """Whether the configured project is the bundled shop (its warehouse, data and report)."""
        return self.sqlmesh_project_dir == BUNDLED_SQLMESH_PROJECT.resolve()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        env = environ.get("PIPELINES_ENV", "local").strip() or "local"
        if env not in ("local", "prod"):
            raise SettingsError(f"PIPELINES_ENV must be 'local' or 'prod', got {env!r}")
        lake_uri = environ.get("PIPELINES_LAKE_URI", "").strip() or "./.lake"
        if not lake_uri.startswith("s3://"):
            if "://" in lake_uri:
                raise SettingsError(
                    f"PIPELINES_LAKE_URI must be a local folder or s3://bucket/prefix, got {lake_uri!r}"
                )
            lake_uri = str(local_path(lake_uri))
        else:
            lake_uri = lake_uri.rstrip("/")
            if lake_uri == "s3:/" or lake_uri == "s3://":
                raise SettingsError("PIPELINES_LAKE_URI names no bucket")
        data_dir = local_path(environ.get("PIPELINES_DATA_DIR", "").strip() or "./.data")
        asked = environ.get("SQLMESH_PROJECT_DIR", "").strip()
        project_dir = Path(asked or BUNDLED_SQLMESH_PROJECT).expanduser().resolve()
        # the bundled project is optional (pipelines/defs/shop may be deleted); a named one is not
        if asked and not (project_dir / "config.yaml").exists() and not (project_dir / "config.py").exists():
            raise SettingsError(
                f"SQLMESH_PROJECT_DIR={project_dir} is not a SQLMesh project (no config.yaml or config.py)"
            )
        gateway = environ.get("SQLMESH_GATEWAY", "").strip() or None
        demo_default = "1" if env == "local" else "0"
        demo_seed = environ.get("PIPELINES_DEMO_SEED", demo_default).strip() in ("1", "true", "yes")
        return cls(
            env=env,  # type: ignore[arg-type]
            lake_uri=lake_uri,
            data_dir=data_dir,
            sqlmesh_project_dir=project_dir,
            sqlmesh_gateway=gateway,
            demo_seed=demo_seed,
        )
