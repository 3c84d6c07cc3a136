"""What every SQLMesh ``Context`` of the bridge is opened with, whatever the process did before.

Two things decide, outside SQLMesh, whether a project loads and runs the same in every process:

* **sqlglot's dispatch tables.** ``import sqlmesh`` teaches sqlglot SQLMesh's expressions
  (``MODEL``, macros, ``@{var}``) by adding them to the ``TRANSFORMS`` of every dialect's
  generator class. sqlglot 30 builds a dispatch table per generator class the first time that
  class generates SQL (``sqlglot.generator._DISPATCH_CACHE``) and never rebuilds it. A generator
  that ran before ``import sqlmesh`` therefore stays blind to SQLMesh's expressions, and SQLMesh
  fails on the first model it must re-render through it, e.g. a blueprint model whose name is
  templated: ``Unsupported expression type Model``. Any code can do that first: a team's
  ``definitions.py``, or this package quoting a table name while it builds definitions from a
  baked state (which never imports SQLMesh). ``sqlmesh_dialects_ready`` drops the tables built
  before SQLMesh's extension; sqlglot rebuilds them from the extended transforms on next use.
  (SQLMesh's own test runner patches the same cache; this only removes stale entries.)
* **Relative DuckDB paths.** A gateway's ``database: db.db`` (what ``sqlmesh init`` writes) is
  opened by DuckDB relative to the process's working directory. The SQLMesh CLI is run in the
  project folder, so that is where a team's files are; ``dg dev`` and run workers start
  anywhere. ``project_configs`` resolves them against each project's folder instead (no
  ``os.chdir``: runs share the process with other threads).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the connection fields of a gateway, and of a config's defaults, that may name DuckDB files
_GATEWAY_CONNECTIONS = ("connection", "state_connection", "test_connection")
_DEFAULT_CONNECTIONS = ("default_connection", "default_test_connection")
# DuckLake metadata catalogs stored in a local file (``ducklake:sqlite:meta.sqlite``)
_FILE_CATALOG_PREFIXES = ("duckdb:", "sqlite:")


def sqlmesh_dialects_ready() -> int:
    """Import SQLMesh and make its sqlglot extensions effective; returns how many stale
    generator dispatch tables were dropped (0 when nothing generated SQL before SQLMesh)."""
    import sqlmesh  # noqa: F401 - importing it extends sqlglot's dialects
    from sqlglot import generator

    cache = getattr(generator, "_DISPATCH_CACHE", None)
    if not isinstance(cache, dict):
        return 0  # a sqlglot without the per-class cache: nothing can be stale
    dropped = 0
    for cls, dispatch in list(cache.items()):
        transforms = list(getattr(cls, "TRANSFORMS", {}).items())
        if any(dispatch.get(kind) is not handler for kind, handler in transforms):
            cache.pop(cls, None)
            dropped += 1
    return dropped


def _local_file(path: str) -> bool:
    """A path DuckDB opens as a file relative to the working directory (not ``:memory:``, an
    ``md:`` / ``postgres:`` / ``s3://`` target, nor an absolute path)."""
    if not path or path.startswith(":memory:") or Path(path).is_absolute():
        return False
    head = path.split("/", 1)[0]
    return ":" not in head


def _absolute(path: str, base: Path) -> str:
    return str((base / Path(path).expanduser()).resolve()) if _local_file(path) else path


def _ducklake_path(path: str, base: Path) -> str:
    """A DuckLake metadata path (``[ducklake:][sqlite:|duckdb:]file``) with its file resolved."""
    prefix = ""
    if path.startswith("ducklake:"):
        prefix, path = "ducklake:", path[len("ducklake:") :]
    for kind in _FILE_CATALOG_PREFIXES:
        if path.startswith(kind):
            prefix, path = prefix + kind, path[len(kind) :]
            break
    return prefix + _absolute(path, base)


def _catalog(target: Any, base: Path) -> Any:
    if isinstance(target, str):
        return _absolute(target, base)
    kind = getattr(target, "type", None)
    if kind == "ducklake":
        update = {"path": _ducklake_path(target.path, base)}
        if target.data_path:
            update["data_path"] = _absolute(target.data_path, base)
        return target.model_copy(update=update)
    if kind in ("duckdb", "sqlite"):
        return target.model_copy(update={"path": _absolute(target.path, base)})
    return target


def resolve_duckdb_paths(connection: Any, base: Path) -> Any:
    """``connection`` with its relative DuckDB ``database`` and catalog files taken from
    ``base``; any other connection (or an absolute path) is returned unchanged."""
    from sqlmesh.core.config.connection import BaseDuckDBConnectionConfig

    if not isinstance(connection, BaseDuckDBConnectionConfig):
        return connection
    update: dict[str, Any] = {}
    if connection.database and _local_file(connection.database):
        update["database"] = _absolute(connection.database, base)
    if connection.catalogs:
        catalogs = {name: _catalog(target, base) for name, target in connection.catalogs.items()}
        if catalogs != connection.catalogs:
            update["catalogs"] = catalogs
    return connection.model_copy(update=update) if update else connection


def resolve_config_paths(config: Any, project_dir: Path) -> Any:
    """A SQLMesh ``Config`` whose DuckDB files are where ``sqlmesh`` run in ``project_dir`` opens them."""
    base = Path(project_dir).resolve()
    update: dict[str, Any] = {}
    gateways = config.gateways
    if isinstance(gateways, dict):
        resolved = {}
        for name, gateway in gateways.items():
            fields = {
                field: resolve_duckdb_paths(getattr(gateway, field), base)
                for field in _GATEWAY_CONNECTIONS
                if getattr(gateway, field, None) is not None
            }
            changed = {k: v for k, v in fields.items() if v is not getattr(gateway, k)}
            resolved[name] = gateway.model_copy(update=changed) if changed else gateway
        update["gateways"] = resolved
    for field in _DEFAULT_CONNECTIONS:
        connection = getattr(config, field, None)
        if connection is not None:
            update[field] = resolve_duckdb_paths(connection, base)
    return config.model_copy(update=update)


def project_configs(project_dirs: Sequence[str | Path]) -> dict[Path, Any]:
    """The projects' SQLMesh configs, ready to open a ``Context`` with (``Context(paths=dirs,
    config=project_configs(dirs))``): SQLMesh's sqlglot extensions in place, and relative
    DuckDB files resolved against each project's folder (the first project's gateways are the
    ones SQLMesh connects with)."""
    sqlmesh_dialects_ready()
    from sqlmesh.core.config import Config
    from sqlmesh.core.config.loader import load_configs

    configs = load_configs(None, Config, [Path(d) for d in project_dirs])
    return {path: resolve_config_paths(config, path) for path, config in configs.items()}
