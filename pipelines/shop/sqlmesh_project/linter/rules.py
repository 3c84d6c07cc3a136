"""Project lint rules (SQLMesh loads every ``Rule`` subclass in ``linter/``; ``config.py`` turns
them on). A model reaches the catalogue and the Dagster UI with what it declares here: who owns
it, what it and each of its columns mean, and a guard on the column its intervals hang on."""

from __future__ import annotations

from sqlglot import exp
from sqlmesh.core.linter.rule import Rule, RuleViolation
from sqlmesh.core.model import Model


class ModelDocumented(Rule):
    """Every model has an owner, a description and a description for each of its columns."""

    def check_model(self, model: Model) -> RuleViolation | None:
        if model.kind.is_external or model.kind.is_symbolic:
            return None
        missing = [field for field in ("owner", "description") if not getattr(model, field, None)]
        described = model.column_descriptions or {}
        undocumented = [c for c in (model.columns_to_types or {}) if not described.get(c)]
        if undocumented:
            missing.append("column_descriptions for " + ", ".join(undocumented))
        if not missing:
            return None
        return self.violation(f"Model {model.name} has no " + "; no ".join(missing) + ".")


class TimeColumnNotNull(Rule):
    """Every incremental-by-time model audits its time column with ``not_null``: a NULL there
    belongs to no interval, so no backfill or restatement would ever touch that row."""

    def check_model(self, model: Model) -> RuleViolation | None:
        if not model.kind.is_incremental_by_time_range:
            return None
        column = model.time_column.column.name if model.time_column else None
        for name, args in model.audits:
            if name != "not_null" or column is None:
                continue
            columns = args.get("columns")
            names = {c.name for c in columns.find_all(exp.Column)} if columns is not None else set()
            if isinstance(columns, exp.Column):
                names.add(columns.name)
            if column in names:
                return None
        return self.violation(
            f"Model {model.name} is incremental by '{column}' but has no not_null audit on it: "
            f"add not_null(columns := ({column}, ...))."
        )
