"""PII lint: no marts column may carry unmasked PII, and governance.yaml must stay truthful.

Run in CI (exit status 1 on any violation)::

    python -m pipelines.governance.pii_lint [PROJECT_DIR] [--gateway NAME]

Rules:

- ``pii-in-mart``: a column of a ``marts`` model resolves to ``pii`` (it flows from a PII source
  column that was neither masked nor reclassified on the way);
- ``masked-without-mask_pii``: governance.yaml declares a column masked but the model's SQL
  does not produce it with ``@mask_pii(...)``;
- ``downgrade-without-reason``: a declared level is less strict than lineage says, with no reason;
- ``unknown-model`` / ``unknown-column``: governance.yaml names something that does not exist.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster_sqlmesh_bridge.project import ProjectInfo
from pipelines.governance.classification import (
    RANK,
    Classifier,
    ColumnGraph,
    Governance,
    display,
    load_governance,
    short_name,
)

MART_SCHEMAS = ("marts",)


@dataclass(frozen=True)
class Violation:
    rule: str
    model: str
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


def _masked_in_sql(sql: str, column: str) -> bool:
    """Whether ``@mask_pii(...) [AS] column`` appears in a model's SQL (one level of nesting)."""
    pattern = rf'@mask_pii\s*\((?:[^()]|\([^()]*\))*\)\s+(?:AS\s+)?"?{re.escape(column)}"?(?![A-Za-z0-9_])'
    return re.search(pattern, sql, flags=re.IGNORECASE) is not None


def _declaration_violations(project: ProjectInfo, governance: Governance) -> list[Violation]:
    by_name = {short_name(m): m for m in project.models.values()}
    found = []
    for name, columns in sorted(governance.rules.items()):
        model = by_name.get(name)
        if model is None:
            found.append(
                Violation("unknown-model", name, None, f"governance.yaml names {name}: no such model")
            )
            continue
        known = set(ColumnGraph.columns(model))
        sql = Path(model.path).read_text() if model.path and model.path.endswith(".sql") else None
        for column, rule in sorted(columns.items()):
            if column not in known:
                found.append(
                    Violation(
                        "unknown-column",
                        name,
                        column,
                        f"governance.yaml names {name}.{column}: no such column",
                    )
                )
            elif rule.masked and sql is not None and not _masked_in_sql(sql, column):
                found.append(
                    Violation(
                        "masked-without-mask_pii",
                        name,
                        column,
                        f"{name}.{column} is declared masked but {model.path} does not produce it "
                        "with @mask_pii(...)",
                    )
                )
    return found


def lint_pii(
    project: ProjectInfo, governance: Governance | None = None, mart_schemas: Sequence[str] = MART_SCHEMAS
) -> list[Violation]:
    """Every violation of the rules above, marts columns first, in a stable order."""
    governance = governance if governance is not None else load_governance(project)
    classifier = Classifier(project, governance)
    found: list[Violation] = []
    for model in sorted(project.internal_models, key=short_name):
        for column in ColumnGraph.columns(model):
            resolved = classifier.resolve(model.fqn, column)
            if model.schema in mart_schemas and resolved.level == "pii":
                path = (
                    "declared pii in governance.yaml"
                    if resolved.declared
                    else " <- ".join(display(ref, project) for ref in resolved.path) + " (pii)"
                )
                found.append(
                    Violation(
                        "pii-in-mart",
                        short_name(model),
                        column,
                        f"{short_name(model)}.{column} carries unmasked PII: {path}. Drop it, "
                        "mask it with @mask_pii and declare it `masked: true` in governance.yaml, "
                        "or reclassify it there with a reason.",
                    )
                )
            rule = governance.rule(model, column)
            if rule is not None and rule.reason is None:
                lineage = classifier.inherited(model.fqn, column)
                if RANK[rule.classification] < RANK[lineage.level] and not rule.masked:
                    found.append(
                        Violation(
                            "downgrade-without-reason",
                            short_name(model),
                            column,
                            f"{short_name(model)}.{column} is declared {rule.classification} but "
                            f"lineage says {lineage.level}: add a reason in governance.yaml",
                        )
                    )
    return found + _declaration_violations(project, governance)


def main(argv: Sequence[str] | None = None) -> int:
    from dagster_sqlmesh_bridge import load_project
    from pipelines.platform.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.governance.pii_lint", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "project_dir", nargs="?", help="SQLMesh project (default: SQLMESH_PROJECT_DIR or the bundled one)"
    )
    parser.add_argument("--gateway", default=None, help="SQLMesh gateway (default: SQLMESH_GATEWAY)")
    parser.add_argument(
        "--no-cache", action="store_true", help="re-read the project instead of the bridge cache"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    project_dir = Path(args.project_dir) if args.project_dir else settings.sqlmesh_project_dir
    project = load_project(project_dir, args.gateway or settings.sqlmesh_gateway, use_cache=not args.no_cache)
    violations = lint_pii(project)
    for violation in violations:
        print(violation)
    models = len(project.internal_models)
    print(f"pii lint: {models} models, {len(violations)} violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
