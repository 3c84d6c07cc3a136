"""The Evidence site (``reports/evidence/``): export the marts, build with npm, publish atomically.

Optional (``PIPELINES_EVIDENCE=1``): Evidence 40.x runs duckdb-wasm in Node during
``evidence sources``, which downloads DuckDB extensions from DuckDB's extension host, so the
build only works where that host is reachable (docs/api.md). The Plotly report stays the default.

Publishing never overwrites a live file set: the site goes to a new prefix
``reports/site/versions/<version>/``, then one PUT of ``reports/site/current.json`` and one of
``reports/site/index.html`` (a redirect) flip readers over; each is atomic, so a reader follows
the old or the new version, never a half-written one. Older versions beyond ``keep`` are removed
after the flip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dagster_sqlmesh_bridge.identifiers import safe_identifier
from pipelines.platform.lake import Lake

PROJECT_DIR = Path(__file__).resolve().parents[3] / "reports" / "evidence"
SITE_PREFIX = "reports/site"
POINTER_KEY = f"{SITE_PREFIX}/current.json"
INDEX_KEY = f"{SITE_PREFIX}/index.html"
EXPORT_FILE = "shop_marts.duckdb"  # not "marts.duckdb": its catalog name would clash with the schema
MARTS_READ = ("daily_revenue", "category_sales", "web_funnel")
_SQL_BLOCK = re.compile(r"^```sql[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_VERSION = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9_-]{1,64}$")


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether the Evidence asset is defined (``PIPELINES_EVIDENCE=1``)."""
    env = os.environ if environ is None else environ
    return env.get("PIPELINES_EVIDENCE", "").strip().lower() in ("1", "true", "yes")


def page_queries(pages_dir: Path = PROJECT_DIR / "pages") -> dict[str, dict[str, str]]:
    """``page -> {query name -> SQL}`` of every Markdown page's ```sql blocks."""
    return {
        path.stem: {name: sql.strip() for name, sql in _SQL_BLOCK.findall(path.read_text(encoding="utf-8"))}
        for path in sorted(pages_dir.glob("*.md"))
    }


def export_marts(con: duckdb.DuckDBPyConnection, target: Path, tables: tuple[str, ...] = MARTS_READ) -> Path:
    """Copy the marts the pages read into a fresh DuckDB file (schema ``marts``) for Evidence."""
    target.unlink(missing_ok=True)
    path = str(target).replace("'", "''")  # ATTACH takes no parameters: a quoted literal
    con.execute(f"ATTACH '{path}' AS evidence_export (READ_WRITE)")
    try:
        con.execute("CREATE SCHEMA evidence_export.marts")
        for table in tables:
            name = safe_identifier(table, "mart name")
            con.execute(f'CREATE TABLE evidence_export.marts."{name}" AS SELECT * FROM marts."{name}"')
    finally:
        con.execute("DETACH evidence_export")
    return target


class EvidenceBuildError(RuntimeError):
    """An npm step failed; the message names the step and ends with its output."""


def run_step(args: list[str], cwd: Path, timeout: float) -> float:
    """Run one npm step, returning its seconds; fail with the step's tail of output."""
    if shutil.which(args[0]) is None:
        raise EvidenceBuildError(f"{args[0]} not found: install Node.js 20+ to build the Evidence site")
    env = {**os.environ, "SEND_ANONYMOUS_USAGE_STATS": "no", "CI": "1"}
    started = time.monotonic()
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-2000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-2000:]
        raise EvidenceBuildError(f"`{' '.join(args)}` did not finish in {timeout:.0f} s: {tail!r}") from None
    if done.returncode != 0:
        raise EvidenceBuildError(
            f"`{' '.join(args)}` exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}"
        )
    return time.monotonic() - started


def build_site(
    con: duckdb.DuckDBPyConnection, work_dir: Path, timeout: float = 900
) -> tuple[Path, dict[str, float]]:
    """Copy the project to ``work_dir``, export the marts, ``npm ci``, sources, build."""
    project = work_dir / "evidence"
    ignore = shutil.ignore_patterns("node_modules", ".evidence", "build", "*.duckdb")
    shutil.copytree(PROJECT_DIR, project, ignore=ignore)
    export_marts(con, project / "sources" / "marts" / EXPORT_FILE)
    timings = {
        "npm_ci": run_step(["npm", "ci", "--no-audit", "--no-fund"], project, timeout),
        "sources": run_step(["npm", "run", "sources"], project, timeout),
        "build": run_step(["npm", "run", "build"], project, timeout),
    }
    return project / "build", timings


@dataclass(frozen=True)
class Published:
    version: str
    prefix: str
    files: int
    bytes: int


def new_version(run_id: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9_-]', '', run_id)[:64] or 'manual'}"


def current_version(lake: Lake) -> str | None:
    if not lake.exists(POINTER_KEY):
        return None
    return json.loads(lake.get_bytes(POINTER_KEY))["version"]


def publish_site(lake: Lake, site_dir: Path, version: str, keep: int = 3) -> Published:
    """Upload ``site_dir`` under a new prefix, then flip the pointer and the index redirect."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"invalid site version {version!r}")
    if not (site_dir / "index.html").is_file():
        raise ValueError(f"{site_dir} has no index.html: not a built site")
    prefix = f"{SITE_PREFIX}/versions/{version}"
    files = sorted(p for p in site_dir.rglob("*") if p.is_file())
    for path in files:
        lake.put_file(path, f"{prefix}/{path.relative_to(site_dir).as_posix()}")
    size = sum(p.stat().st_size for p in files)
    pointer = {
        "version": version,
        "prefix": prefix,
        "index": f"{prefix}/index.html",
        "files": len(files),
        "published_at": datetime.now(UTC).isoformat(),
    }
    lake.put_bytes(json.dumps(pointer, indent=2).encode(), POINTER_KEY)
    target = f"versions/{version}/index.html"
    redirect = (
        f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}">'
        f'<title>Shop reports</title><a href="{target}">Shop reports</a>\n'
    )
    lake.put_bytes(redirect.encode(), INDEX_KEY)
    _prune(lake, keep, version)
    return Published(version, prefix, len(files), size)


def _prune(lake: Lake, keep: int, live: str) -> None:
    """Remove all but the newest ``keep`` versions (never the live one)."""
    versions = sorted(
        {o.key.split("/")[3] for o in lake.list(f"{SITE_PREFIX}/versions/") if o.key.count("/") >= 4}
    )
    for old in versions[:-keep] if keep > 0 else versions:
        if old != live:
            lake.delete_prefix(f"{SITE_PREFIX}/versions/{old}/")
