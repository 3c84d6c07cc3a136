"""Macros of the bundled project: raw-zone views and PII masking."""

from __future__ import annotations

import logging
import os

from sqlglot import exp
from sqlmesh import macro
from sqlmesh.core.macros import MacroEvaluator

NOTHING_TO_CREATE = "Rendering `@create_raw_views()` did not return an expression"


def _not_nothing_to_create(record: logging.LogRecord) -> bool:
    """SQLMesh warns whenever a ``before_all`` statement renders to nothing (its renderer keeps that
    a warning for statements that run only sometimes). ``create_raw_views`` renders to nothing on
    purpose: at load time, on Athena/Trino, and once the views exist (every run after the first).
    A user can do nothing about it, so exactly that message is dropped; any other stays."""
    return record.getMessage() != NOTHING_TO_CREATE


_renderer_log = logging.getLogger("sqlmesh.core.renderer")
if not any(getattr(f, "__name__", "") == _not_nothing_to_create.__name__ for f in _renderer_log.filters):
    _renderer_log.addFilter(_not_nothing_to_create)


@macro()
def create_raw_views(evaluator: MacroEvaluator) -> list[str] | None:
    """One view per source over its Parquet partitions, or an empty typed view before any landed."""
    if evaluator.runtime_stage in ("loading", "creating"):
        return None
    adapter = evaluator.locals.get("engine_adapter")
    if adapter is not None and adapter.dialect != "duckdb":
        return None  # Athena/Trino read the raw zone as catalog tables, not DuckDB views
    from pipelines.shop.raw_views import raw_view_statements

    existing = None
    if adapter is not None:
        rows = adapter.fetchall(
            "SELECT view_name, sql FROM duckdb_views() "
            "WHERE schema_name = 'raw' AND database_name = current_database()"
        )
        existing = {name: sql for name, sql in rows}
    return raw_view_statements(existing=existing) or None


@macro()
def mask_pii(evaluator: MacroEvaluator, value: exp.Expression) -> exp.Expression:
    """Salted SHA-256 of a PII value; the salt is a secret read from ``PIPELINES_PII_SALT``."""
    salt = os.environ.get("PIPELINES_PII_SALT", "local-development-salt")
    salted = exp.func("concat", exp.Literal.string(salt), exp.func("lower", exp.cast(value, "varchar")))
    adapter = evaluator.locals.get("engine_adapter")
    target = getattr(adapter, "dialect", None) or evaluator.gateway or "duckdb"
    if target in ("trino", "athena", "presto"):  # sha256 takes varbinary there: same lower-case hex
        return exp.func("lower", exp.func("to_hex", exp.func("sha256", exp.func("to_utf8", salted))))
    return exp.func("sha256", salted)
