"""The SQLMesh project as plain data, built from a ``sqlmesh.Context`` and cached on disk.

Building asset specs needs names, kinds, columns, lineage and fingerprints: loading a Context
(and rendering every model for column lineage) costs seconds to minutes on large projects, so
the result is stored as JSON keyed by a hash of every project file, the gateway and the
SQLMesh version. An unchanged project loads from the cache without importing the models.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CACHE_FORMAT = 3
_SKIP_DIRS = {".cache", "logs", "__pycache__", "target", ".pytest_cache"}


@dataclass(frozen=True)
class AuditInfo:
    name: str
    blocking: bool
    args: str


@dataclass(frozen=True)
class ModelInfo:
    fqn: str
    name: str
    catalog: str
    schema: str
    table: str
    kind: str
    external: bool
    time_column: str | None
    interval_unit: str | None
    start: str | None
    cron: str
    description: str | None
    owner: str | None
    tags: list[str]
    columns: list[tuple[str, str, str | None]]
    depends_on: list[str]
    audits: list[AuditInfo]
    fingerprint: str
    path: str | None
    column_lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def time_partitioned(self) -> bool:
        return self.kind == "INCREMENTAL_BY_TIME_RANGE" and self.time_column is not None


@dataclass(frozen=True)
class ProjectInfo:
    project_dir: str
    gateway: str | None
    default_catalog: str | None
    models: dict[str, ModelInfo]

    def model(self, fqn: str) -> ModelInfo:
        return self.models[fqn]

    @property
    def internal_models(self) -> list[ModelInfo]:
        return [m for m in self.models.values() if not m.external]

    def topological(self, fqns: set[str] | None = None) -> list[ModelInfo]:
        """Models (all, or those named) upstream first, ties broken by name."""
        order: list[ModelInfo] = []
        seen: set[str] = set()

        def visit(fqn: str) -> None:
            if fqn in seen or fqn not in self.models:
                return
            seen.add(fqn)
            for parent in self.models[fqn].depends_on:
                visit(parent)
            order.append(self.models[fqn])

        for fqn in sorted(self.models):
            visit(fqn)
        return [m for m in order if (fqns is None or m.fqn in fqns) and not m.external]


def project_hash(project_dir: Path, gateway: str | None) -> str:
    """Hash of every project file plus what else changes the graph (gateway, versions)."""
    digest = hashlib.sha256()
    digest.update(f"{CACHE_FORMAT}|{version('sqlmesh')}|{gateway}|".encode())
    digest.update(os.environ.get("PIPELINES_ENV", "local").encode())
    for path in sorted(project_dir.rglob("*")):
        if not path.is_file() or _SKIP_DIRS.intersection(path.relative_to(project_dir).parts):
            continue
        digest.update(path.relative_to(project_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def cache_dir(project_dir: Path) -> Path:
    configured = os.environ.get("PIPELINES_BRIDGE_CACHE_DIR", "").strip()
    return Path(configured) if configured else project_dir / ".cache" / "dagster-bridge"


def _audits(model: Any) -> list[AuditInfo]:
    audits = []
    for audit, args in model.audits_with_args:
        rendered = ", ".join(f"{k} := {v.sql()}" for k, v in sorted(args.items()))
        audits.append(AuditInfo(audit.name, bool(getattr(audit, "blocking", True)), rendered))
    return audits


def _column_lineage(context: Any, model: Any) -> dict[str, list[tuple[str, str]]]:
    from sqlmesh.core.lineage import column_dependencies

    lineage: dict[str, list[tuple[str, str]]] = {}
    for column in model.columns_to_types or {}:
        try:
            deps = column_dependencies(context, model.fqn, column)
        except Exception as exc:  # lineage is best effort: a macro may defeat it
            log.debug("no lineage for %s.%s: %s", model.fqn, column, exc)
            continue
        lineage[column] = sorted((parent, col) for parent, cols in deps.items() for col in cols)
    return lineage


def build_project_info(context: Any, project_dir: Path, gateway: str | None) -> ProjectInfo:
    """Read everything the Dagster side needs from a loaded Context."""
    snapshots = context.snapshots
    models: dict[str, ModelInfo] = {}
    for fqn, model in context.models.items():
        parts = [p.strip('"') for p in fqn.split(".")]
        catalog, schema, table = (["", *parts] if len(parts) == 2 else parts)[-3:]
        kind = model.kind.name.value if hasattr(model.kind.name, "value") else str(model.kind.name)
        external = kind == "EXTERNAL"
        snapshot = snapshots.get(fqn)
        columns = [
            (name, dtype.sql(dialect=model.dialect), (model.column_descriptions or {}).get(name))
            for name, dtype in (model.columns_to_types or {}).items()
        ]
        models[fqn] = ModelInfo(
            fqn=fqn,
            name=model.name,
            catalog=catalog,
            schema=schema,
            table=table,
            kind=kind,
            external=external,
            time_column=getattr(getattr(model.kind, "time_column", None), "column", None)
            and model.kind.time_column.column.name,
            interval_unit=model.interval_unit.value if not external else None,
            start=str(model.start) if model.start else None,
            cron=str(model.cron),
            description=model.description,
            owner=model.owner,
            tags=list(model.tags or []),
            columns=columns,
            depends_on=sorted(model.depends_on),
            audits=[] if external else _audits(model),
            fingerprint=snapshot.fingerprint.to_identifier() if snapshot else "",
            path=str(model._path) if getattr(model, "_path", None) else None,
            column_lineage={} if external else _column_lineage(context, model),
        )
    return ProjectInfo(str(project_dir), gateway, context.default_catalog, models)


def _to_json(info: ProjectInfo) -> str:
    return json.dumps(asdict(info))


def _from_json(text: str) -> ProjectInfo:
    raw = json.loads(text)
    models = {}
    for fqn, m in raw["models"].items():
        m["audits"] = [AuditInfo(**a) for a in m["audits"]]
        m["columns"] = [tuple(c) for c in m["columns"]]
        m["column_lineage"] = {k: [tuple(x) for x in v] for k, v in m["column_lineage"].items()}
        models[fqn] = ModelInfo(**m)
    return ProjectInfo(raw["project_dir"], raw["gateway"], raw["default_catalog"], models)


def load_project(project_dir: str | Path, gateway: str | None = None, use_cache: bool = True) -> ProjectInfo:
    """The project's models as plain data, from the cache when no project file changed."""
    project_dir = Path(project_dir).resolve()
    key = project_hash(project_dir, gateway)
    cache_file = cache_dir(project_dir) / f"project-{key}.json"
    if use_cache and cache_file.exists():
        try:
            return _from_json(cache_file.read_text())
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable bridge cache %s: %s", cache_file, exc)
    from sqlmesh import Context

    context = Context(paths=str(project_dir), gateway=gateway, load=True)
    try:
        info = build_project_info(context, project_dir, gateway)
    finally:
        context.close()
    if use_cache:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_to_json(info))
            tmp.replace(cache_file)
        except OSError as exc:  # a read-only image without a baked cache still works
            log.warning("could not write bridge cache %s: %s", cache_file, exc)
    return info
