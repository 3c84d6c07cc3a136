"""The SQLMesh project as plain data, built from a ``sqlmesh.Context`` and cached on disk.

Building asset specs needs names, kinds, columns, lineage and fingerprints: loading a Context
(and rendering every model for column lineage) costs seconds to minutes on large projects, so
the result is stored as JSON keyed by what determines the models: the project files (not its
databases, logs or caches), the local Python modules its Python files import (wherever they
live), the gateway, SQLMesh's version and a caller's ``cache_salt``. An unchanged project loads
from the cache without importing SQLMesh.

Loading never opens the warehouse or the state database: fingerprints are computed from the
models alone, remote state is not merged (``load_state=False``), and a DuckDB connection is
replaced by in-memory catalogs of the same names (so the default catalog is the same).
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CACHE_FORMAT = 7
_SKIP_DIRS = {".cache", "logs", "__pycache__", "target", ".pytest_cache", ".git", ".venv", "node_modules"}
# what changes as data is written: never part of the key
_SKIP_FILES = (
    "*.duckdb",
    "*.duckdb.*",
    "*.duckdb-*",
    "*.db",
    "*.db-*",
    "*.wal",
    "*.sqlite*",
    "*.log",
    "*.lock",
)


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
    # strftime format of a string time column (``time_column (ds, '%Y%m%d')``)
    time_column_format: str | None = None
    # no table of its own (EMBEDDED: inlined into its children), or not in the project at all
    embedded: bool = False
    # referenced by a model but defined nowhere in the project (nor as an external model)
    missing: bool = False
    # SQLMesh forbids restating it (``disable_restatement``, the default of SCD type 2): a
    # recompute would rewrite its history, so explicit runs never restate it
    restatable: bool = True
    # columns of the model's declared ``grain``/``grains`` and of its kind's ``unique_key``
    # (INCREMENTAL_BY_UNIQUE_KEY, SCD type 2): identifiers, not measures
    grains: list[str] = field(default_factory=list)
    unique_key: list[str] = field(default_factory=list)

    @property
    def time_partitioned(self) -> bool:
        return self.kind == "INCREMENTAL_BY_TIME_RANGE" and self.time_column is not None

    def sql_name(self, dialect: str = "duckdb") -> str:
        """The model's table in SQL: ``"catalog"."schema"."table"`` from SQLMesh's parsed parts,
        each quoted. Two parts are ambiguous when the catalog is named like a schema (``shop.duckdb``
        holding schema ``shop``), and any name with a space, dot or reserved word needs quoting."""
        return quoted_table(self.catalog, self.schema, self.table, dialect)

    @property
    def is_asset(self) -> bool:
        """A model that SQLMesh materializes (not external, not embedded)."""
        return not self.external and not self.embedded


@dataclass(frozen=True)
class ProjectInfo:
    project_dir: str
    gateway: str | None
    default_catalog: str | None
    models: dict[str, ModelInfo]
    # every path of a multi-repo project (``project_dir`` is the first)
    project_dirs: list[str] = field(default_factory=list)
    # the gateway's engine (``duckdb``, ``athena``, ``trino``...)
    engine: str = "duckdb"

    def model(self, fqn: str) -> ModelInfo:
        return self.models[fqn]

    @property
    def internal_models(self) -> list[ModelInfo]:
        """The models that are assets: SQLMesh builds a table or view for them."""
        return [m for m in self.models.values() if m.is_asset]

    @property
    def external_models(self) -> list[ModelInfo]:
        """Tables the project reads but does not build (declared external or just referenced)."""
        return [m for m in self.models.values() if m.external]

    def asset_parents(self, model: ModelInfo) -> list[str]:
        """The fqns a model reads, looking through EMBEDDED models to what they read."""
        out: list[str] = []
        seen: set[str] = set()
        stack = list(reversed(model.depends_on))
        while stack:
            fqn = stack.pop()
            if fqn in seen:
                continue
            seen.add(fqn)
            parent = self.models.get(fqn)
            if parent is not None and parent.embedded:
                stack.extend(reversed(parent.depends_on))
            else:
                out.append(fqn)
        return sorted(out)

    def read_through(self, fqns: Iterable[str]) -> set[str]:
        """Every model the given models read, directly or through VIEW and EMBEDDED models
        (a view stores nothing: reading it reads its parents), the views themselves included.
        A run writing ``fqns`` must lock these against a concurrent restatement."""
        out: set[str] = set()
        stack = [d for fqn in fqns if fqn in self.models for d in self.models[fqn].depends_on]
        while stack:
            fqn = stack.pop()
            if fqn in out:
                continue
            out.add(fqn)
            parent = self.models.get(fqn)
            if parent is not None and (parent.embedded or parent.kind == "VIEW"):
                stack.extend(parent.depends_on)
        return out

    def external_inputs(self, fqn: str) -> set[str]:
        """The external tables a model reads, directly or through VIEW and EMBEDDED models."""
        return {f for f in self.read_through([fqn]) if f not in self.models or self.models[f].external}

    def downstream(self, fqns: Iterable[str]) -> set[str]:
        """Every asset model that reads one of ``fqns``, transitively (what a restatement of
        them invalidates in SQLMesh), ``fqns`` excluded."""
        children: dict[str, list[str]] = {}
        for model in self.models.values():
            for parent in model.depends_on:
                children.setdefault(parent, []).append(model.fqn)
        out: set[str] = set()
        stack = [c for fqn in fqns for c in children.get(fqn, [])]
        while stack:
            fqn = stack.pop()
            if fqn in out:
                continue
            out.add(fqn)
            stack.extend(children.get(fqn, []))
        return {f for f in out - set(fqns) if f in self.models and self.models[f].is_asset}

    def topological(self, fqns: set[str] | None = None) -> list[ModelInfo]:
        """Asset models (all, or those named) upstream first, ties broken by name."""
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
        return [m for m in order if (fqns is None or m.fqn in fqns) and m.is_asset]


def _skipped(relative: Path, excluded: Sequence[Path], absolute: Path) -> bool:
    if _SKIP_DIRS.intersection(relative.parts[:-1]) or relative.name in _SKIP_DIRS:
        return True
    if any(fnmatch.fnmatch(relative.name, pattern) for pattern in _SKIP_FILES):
        return True
    return any(absolute.is_relative_to(e) for e in excluded)


def project_files(project_dir: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """The files that define a project: everything but databases, logs, caches and ``exclude``."""
    out = []
    for root, dirs, files in os.walk(project_dir):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not any((here / d).is_relative_to(e) for e in exclude)
        )
        for name in sorted(files):
            path = here / name
            if not _skipped(path.relative_to(project_dir), exclude, path):
                out.append(path)
    return out


def _library_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return sorted(roots)


def _module_file(name: str, search: Sequence[Path]) -> Path | None:
    """The source file of an importable module, found without importing anything new."""
    parts = name.split(".")
    for base in search:
        candidate = base.joinpath(*parts)
        for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if path.is_file():
                return path
    if parts[0] in sys.builtin_module_names or parts[0] in sys.stdlib_module_names:
        return None
    try:
        spec = importlib.util.find_spec(parts[0])  # top level: never executes the module
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location).joinpath(*parts[1:])
        for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
            if path.is_file():
                return path
    return None


def imported_local_modules(python_files: Iterable[Path], search: Sequence[Path]) -> list[Path]:
    """Source files of the non-library modules that ``python_files`` import, transitively.

    A ``config.py`` or macro importing a helper package elsewhere on the path changes the
    models when that helper changes, so its source belongs in the cache key.
    """
    libraries = _library_roots()
    pending = list(python_files)
    seen: set[Path] = {p.resolve() for p in pending}
    found: list[Path] = []
    while pending:
        source = pending.pop()
        try:
            tree = ast.parse(source.read_bytes())
        except (SyntaxError, OSError, ValueError):
            continue
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        for name in sorted(names):
            path = _module_file(name, [source.parent, *search])
            if path is None:
                continue
            path = path.resolve()
            if path in seen or any(path.is_relative_to(root) for root in libraries):
                continue
            seen.add(path)
            found.append(path)
            pending.append(path)
    return sorted(found)


def project_hash(
    project_dirs: Sequence[Path],
    gateway: str | None,
    exclude: Sequence[Path] = (),
    salt: str = "",
) -> str:
    """Hash of what determines the models: project files, the local modules their Python files
    import, the gateway, SQLMesh's version and ``salt``; never databases, logs or caches."""
    digest = hashlib.sha256()
    digest.update(f"{CACHE_FORMAT}|{version('sqlmesh')}|{gateway}|{salt}|".encode())
    python_files: list[Path] = []
    for index, project_dir in enumerate(project_dirs):
        for path in project_files(project_dir, exclude):
            digest.update(f"{index}:{path.relative_to(project_dir).as_posix()}".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            if path.suffix == ".py":
                python_files.append(path)
    for path in imported_local_modules(python_files, list(project_dirs)):
        if any(path.is_relative_to(d) for d in project_dirs):
            continue  # hashed above
        digest.update(str(path).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def default_cache_dir(project_dir: Path) -> Path:
    return project_dir / ".cache" / "dagster-bridge"


def _audits(model: Any) -> list[AuditInfo]:
    audits = []
    for audit, args in model.audits_with_args:
        rendered = ", ".join(f"{k} := {v.sql()}" for k, v in sorted(args.items()))
        audits.append(AuditInfo(audit.name, bool(getattr(audit, "blocking", True)), rendered))
    return audits


def _column_lineage(context: Any, model: Any) -> dict[str, list[tuple[str, str]]]:
    """Each column's parent columns. SQLMesh's renderer already qualified the model's query:
    lineage walks it as is (~4x faster than ``column_dependencies``, which copies and
    qualifies the query again); a column whose parents that walk cannot name (a table of
    unknown schema, a managed column) takes SQLMesh's own path, so the result is the same."""
    fast = _lineage_of_rendered(context, model)
    if fast is not None:
        return fast
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


def _lineage_of_rendered(context: Any, model: Any) -> dict[str, list[tuple[str, str]]] | None:
    """Lineage from the query SQLMesh rendered (and qualified) for the model; ``None`` when a
    column has no named parent, so the caller asks SQLMesh instead."""
    from sqlglot import exp
    from sqlglot.lineage import lineage as sqlglot_lineage
    from sqlglot.optimizer import build_scope
    from sqlmesh.core.dialect import normalize_model_name

    try:
        query = model.render_query()
        scope = build_scope(query) if query is not None else None
    except Exception:  # a Python model, a macro that needs the engine: SQLMesh's path decides
        return None
    if scope is None:
        return None
    lineage: dict[str, list[tuple[str, str]]] = {}
    for column in model.columns_to_types or {}:
        try:
            root = sqlglot_lineage(
                column, sql=query, scope=scope, dialect=model.dialect, trim_selects=False, copy=False
            )
        except Exception:
            return None
        parents: set[tuple[str, str]] = set()
        for node in root.walk():
            if node.downstream:
                continue
            table = node.expression.find(exp.Table)
            if table:
                name = normalize_model_name(
                    table, default_catalog=context.default_catalog, dialect=model.dialect
                )
                parents.add((name, exp.to_column(node.name).name))
        if not parents:
            return None
        lineage[column] = sorted(parents)
    return lineage


def quoted_table(catalog: str | None, schema: str | None, table: str, dialect: str = "duckdb") -> str:
    """A table reference with every given part quoted (quotes inside a part escaped)."""
    from sqlglot import exp

    return exp.table_(table, db=schema or None, catalog=catalog or None, quoted=True).sql(dialect=dialect)


def _split_fqn(fqn: str) -> tuple[str, str, str]:
    from sqlglot import exp

    table = exp.to_table(fqn)
    return table.catalog, table.db, table.name


def _time_column(model: Any) -> tuple[str | None, str | None]:
    column = getattr(model.kind, "time_column", None)
    if column is None:
        return None, None
    return column.column.name, getattr(column, "format", None)


def _column_names(expressions: Sequence[Any]) -> list[str]:
    """The column names in SQLMesh key expressions (``a``, ``(a, b)``, ``coalesce(a, b)``)."""
    from sqlglot import exp

    names: list[str] = []
    for expression in expressions:
        names += [c.name for c in expression.find_all(exp.Column)] or (
            [expression.name] if isinstance(expression, exp.Identifier) else []
        )
    return list(dict.fromkeys(names))


def _fingerprints(context: Any) -> dict[str, str]:
    """Each node's fingerprint as SQLMesh computes it for a plan, without reading any state."""
    from sqlmesh.core.snapshot.definition import fingerprint_from_node

    nodes = {**context.models, **context.standalone_audits}
    cache: dict[str, Any] = {}
    return {
        fqn: fingerprint_from_node(node, nodes=nodes, cache=cache).to_identifier()
        for fqn, node in nodes.items()
    }


def build_project_info(context: Any, project_dirs: Sequence[Path], gateway: str | None) -> ProjectInfo:
    """Read everything the Dagster side needs from a loaded Context."""
    from dagster_sqlmesh_bridge.sqlmesh_private import model_source_path

    fingerprints = _fingerprints(context)
    models: dict[str, ModelInfo] = {}
    for fqn, model in context.models.items():
        catalog, schema, table = _split_fqn(fqn)
        kind = model.kind.name.value if hasattr(model.kind.name, "value") else str(model.kind.name)
        external = kind == "EXTERNAL"
        columns = [
            (name, dtype.sql(dialect=model.dialect), (model.column_descriptions or {}).get(name))
            for name, dtype in (model.columns_to_types or {}).items()
        ]
        time_column, time_format = _time_column(model)
        models[fqn] = ModelInfo(
            fqn=fqn,
            name=model.name,
            catalog=catalog,
            schema=schema,
            table=table,
            kind=kind,
            external=external,
            time_column=time_column,
            time_column_format=time_format,
            interval_unit=model.interval_unit.value if not external else None,
            # as written (``1 week ago``, epoch ms...): resolved with SQLMesh's date parsing on use
            start=str(model.start) if model.start is not None else None,
            cron=str(model.cron),
            description=model.description,
            owner=model.owner,
            tags=list(model.tags or []),
            columns=columns,
            depends_on=sorted(model.depends_on),
            audits=[] if external else _audits(model),
            fingerprint=fingerprints.get(fqn, ""),
            path=model_source_path(model),
            column_lineage={} if external else _column_lineage(context, model),
            embedded=kind == "EMBEDDED",
            restatable=not getattr(model, "disable_restatement", False),
            grains=[] if external else _column_names(model.grains),
            unique_key=[] if external else _column_names(model.unique_key),
        )
    for model in list(models.values()):
        for parent in model.depends_on:
            if parent not in models:
                catalog, schema, table = _split_fqn(parent)
                models[parent] = ModelInfo(
                    fqn=parent, name=f"{schema}.{table}", catalog=catalog, schema=schema, table=table,
                    kind="EXTERNAL", external=True, time_column=None, interval_unit=None, start=None,
                    cron="", description=None, owner=None, tags=[], columns=[], depends_on=[],
                    audits=[], fingerprint="", path=None, missing=True,
                )  # fmt: skip
    connection = context.config.get_connection(gateway)
    return ProjectInfo(
        str(project_dirs[0]),
        gateway,
        context.default_catalog,
        models,
        project_dirs=[str(p) for p in project_dirs],
        engine=str(getattr(connection, "type_", "duckdb")),
    )


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
    raw["models"] = models
    return ProjectInfo(**raw)


def _offline_configs(project_dirs: Sequence[Path]) -> dict[Path, Any]:
    """The projects' configs with every DuckDB file swapped for an in-memory catalog of the
    same name: loading needs the default catalog, never the data (nor the file's lock)."""
    from sqlmesh.core.config.connection import DuckDBConnectionConfig

    from dagster_sqlmesh_bridge.context_setup import project_configs

    def offline(connection: Any) -> Any:
        if type(connection) is not DuckDBConnectionConfig:
            return connection
        if connection.database and connection.database != ":memory:":
            sources = {Path(connection.database).stem: str(Path(connection.database).resolve())}
        elif connection.catalogs:
            sources = {name: repr(target) for name, target in connection.catalogs.items()}
        else:
            return connection.model_copy(update={"extensions": [], "secrets": [], "filesystems": []})
        # one in-memory database per real one, named after it: SQLMesh shares adapters by data
        # file (distinct files must stay distinct) and keys its caches by config (stable names)
        catalogs = {
            name: f":memory:bridge_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
            for name, source in sources.items()
        }
        return connection.model_copy(
            update={
                "database": None,
                "catalogs": catalogs,
                "extensions": [],
                "secrets": [],
                "filesystems": [],
            }
        )

    configs = project_configs(project_dirs)  # relative DuckDB files: from each project's folder
    out = {}
    for path, config in configs.items():
        gateways = config.gateways
        if isinstance(gateways, dict):
            gateways = {
                name: gw.model_copy(update={"connection": offline(gw.connection), "state_connection": None})
                for name, gw in gateways.items()
            }
        update: dict[str, Any] = {"gateways": gateways}
        if config.default_connection is not None:
            update["default_connection"] = offline(config.default_connection)
        out[path] = config.model_copy(update=update)
    return out


def load_project(
    project_dir: str | Path | Sequence[str | Path],
    gateway: str | None = None,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    exclude: Sequence[str | Path] = (),
    cache_salt: str = "",
) -> ProjectInfo:
    """The project's models as plain data, from the cache when nothing that defines them changed.

    ``project_dir``: one path, or several for a multi-repo project. ``cache_dir`` defaults to
    ``<first project>/.cache/dagster-bridge``; ``exclude`` names folders that are not part of the
    project (a data folder inside it); ``cache_salt`` is anything else the caller's config.py
    depends on (an environment name).
    """
    dirs = [Path(project_dir)] if isinstance(project_dir, (str, Path)) else [Path(p) for p in project_dir]
    dirs = [d.resolve() for d in dirs]
    excluded = [Path(e).resolve() for e in exclude]
    key = project_hash(dirs, gateway, excluded, cache_salt)
    cache_file = Path(cache_dir or default_cache_dir(dirs[0])) / f"project-{key}.json"
    if use_cache and cache_file.exists():
        try:
            return _from_json(cache_file.read_text())
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable bridge cache %s: %s", cache_file, exc)
    from sqlmesh import Context

    context = Context(
        paths=[str(d) for d in dirs],
        gateway=gateway,
        config=_offline_configs(dirs),
        load=True,
        load_state=False,
    )
    try:
        info = build_project_info(context, dirs, gateway)
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


def project_to_json(info: ProjectInfo) -> str:
    """The project as the JSON the cache (and the Dagster component's state) stores."""
    return _to_json(info)


def project_from_json(text: str) -> ProjectInfo:
    return _from_json(text)
