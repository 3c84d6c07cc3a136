"""The one read of SQLMesh internals the bridge still needs, guarded by the pinned version.

SQLMesh keeps a model's source file only in the private ``_path`` attribute (no public accessor
in 0.236). The bridge uses it for the asset's code reference, a convenience: on any other SQLMesh
version this returns None (no code reference) instead of reading an attribute that may have
changed. ``pipelines_tests/test_sqlmesh_private.py`` fails when an upgrade breaks it.
"""

from __future__ import annotations

from typing import Any

import sqlmesh

PINNED_SQLMESH = "0.236.4"


def model_source_path(model: Any) -> str | None:
    """The file a model was read from, or None (unknown, or an unpinned SQLMesh version)."""
    if sqlmesh.__version__ != PINNED_SQLMESH:
        return None
    path = getattr(model, "_path", None)
    return str(path) if path else None
