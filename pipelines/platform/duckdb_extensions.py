"""Install DuckDB extensions from the pinned PyPI wheels, never from the network.

DuckDB would download httpfs/ducklake/postgres/aws from its extension server on first use;
production pods and these machines cannot reach it. ``INSTALL '<file>'`` copies the wheel's
binary into the local extension directory once, after which a plain ``LOAD`` (as SQLMesh
issues) works offline.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import duckdb

EXTENSIONS = ("httpfs", "ducklake", "postgres_scanner", "sqlite_scanner", "aws")
_done = False
_lock = threading.Lock()


def extension_file(name: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"wheel duckdb-extension-{name.replace('_', '-')} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"{path} missing: the extension wheel does not match duckdb {duckdb.__version__}")
    return path


def install_extensions() -> None:
    """Make every extension we use loadable offline (idempotent, once per process)."""
    global _done
    with _lock:
        if _done:
            return
        con = duckdb.connect()
        try:
            installed = {
                row[0]
                for row in con.execute(
                    "SELECT extension_name FROM duckdb_extensions() WHERE installed"
                ).fetchall()
            }
            for name in EXTENSIONS:
                if name not in installed:
                    con.execute(f"INSTALL '{extension_file(name)}'")
        finally:
            con.close()
        _done = True
