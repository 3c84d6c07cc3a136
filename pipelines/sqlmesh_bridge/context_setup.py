"""What every SQLMesh ``Context`` of the bridge is opened with, whatever the process did before.

``import sqlmesh`` teaches sqlglot SQLMesh's expressions
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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


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


def project_configs(project_dirs: Sequence[str | Path]) -> dict[Path, Any]:
    """The projects' SQLMesh configs, ready to open a ``Context`` with (``Context(paths=dirs,
    config=project_configs(dirs))``): SQLMesh's sqlglot extensions in place."""
    sqlmesh_dialects_ready()
    from sqlmesh.core.config import Config
    from sqlmesh.core.config.loader import load_configs

    configs = load_configs(None, Config, [Path(d) for d in project_dirs])
    return dict(configs)
