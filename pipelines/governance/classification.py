"""Column classifications of every model, declared or inherited through column lineage.

Source columns are classified in their contracts (``pipelines/shop/sources/contracts.py``). A SQLMesh
model column is classified in ``governance.yaml`` next to the models, or else inherits the
strictest level of the columns it is computed from, so a new model is classified the moment it
exists and nobody has to remember to do it. Levels, least to most restricted::

    public < internal < confidential < masked < pii

``masked`` is PII that went through ``@mask_pii`` (a salted hash): still personal data under
GDPR (pseudonymised), but no longer a direct identifier, so it may reach the marts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract

if TYPE_CHECKING:
    import dagster as dg

LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "masked", "pii")
RANK = {level: i for i, level in enumerate(LEVELS)}
DEFAULT_LEVEL = "internal"
GOVERNANCE_FILE = "governance.yaml"
RAW_SCHEMA = "raw"

ColumnRef = tuple[str, str]  # (model fqn as in ProjectInfo.models, column)


class GovernanceConfigError(ValueError):
    """``governance.yaml`` is malformed: a wrong level or key is a bug, not a default."""


@dataclass(frozen=True)
class ColumnRule:
    """One declared column: its level, whether it is masked PII, and why (for downgrades)."""

    classification: str
    masked: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Governance:
    """The declarations of ``governance.yaml``, keyed by ``schema.table`` then column."""

    rules: Mapping[str, Mapping[str, ColumnRule]]
    path: Path | None = None

    def rule(self, model: ModelInfo, column: str) -> ColumnRule | None:
        return self.rules.get(short_name(model), {}).get(column)

    def merged(self, other: Governance) -> Governance:
        """These declarations overridden by ``other``'s (e.g. a proposed change, in a test)."""
        rules = {name: dict(columns) for name, columns in self.rules.items()}
        for name, columns in other.rules.items():
            rules.setdefault(name, {}).update(columns)
        return Governance(rules, self.path)


def short_name(model: ModelInfo) -> str:
    """``schema.table``: how people (and governance.yaml) name a model."""
    return f"{model.schema}.{model.table}"


def display(ref: ColumnRef, project: ProjectInfo) -> str:
    """``schema.table.column`` for messages."""
    fqn, column = ref
    model = project.models.get(fqn)
    return f"{short_name(model) if model else fqn}.{column}"


def classification_tags(classification: str) -> dict[str, str]:
    """Dagster ``TableColumn`` tags for a level (the raw assets use the same key)."""
    if classification not in RANK:
        raise ValueError(f"unknown classification {classification!r}; expected one of {LEVELS}")
    return {"classification": classification}


def with_classification_tags(schema: dg.TableSchema, levels: Mapping[str, str]) -> dg.TableSchema:
    """``schema`` with each column's ``classification`` tag added (the translator's hook)."""
    import dagster as dg

    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description,
                constraints=c.constraints,
                tags={**(c.tags or {}), **(classification_tags(levels[c.name]) if c.name in levels else {})},
            )
            for c in schema.columns
        ],
        constraints=schema.constraints,
    )


def _parse_rule(where: str, raw: Any) -> ColumnRule:
    if not isinstance(raw, dict):
        raise GovernanceConfigError(f"{where}: expected a mapping, got {raw!r}")
    unknown = set(raw) - {"classification", "masked", "reason"}
    if unknown:
        raise GovernanceConfigError(f"{where}: unknown keys {sorted(unknown)}")
    masked = raw.get("masked", False)
    if not isinstance(masked, bool):
        raise GovernanceConfigError(f"{where}: masked must be true or false")
    level = raw.get("classification", "masked" if masked else None)
    if level not in RANK:
        raise GovernanceConfigError(f"{where}: classification must be one of {LEVELS}, got {level!r}")
    if masked and level != "masked":
        raise GovernanceConfigError(f"{where}: a masked column is classified 'masked', not {level!r}")
    reason = raw.get("reason")
    if reason is not None and (not isinstance(reason, str) or not reason.strip()):
        raise GovernanceConfigError(f"{where}: reason must be a non-empty string")
    return ColumnRule(level, masked or level == "masked", reason)


def parse_governance(data: Any, path: Path | None = None) -> Governance:
    """Validate the YAML document; an empty or absent file declares nothing."""
    if data is None:
        return Governance({}, path)
    if not isinstance(data, dict) or set(data) - {"models"}:
        raise GovernanceConfigError(f"{path}: expected a mapping with one key 'models'")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise GovernanceConfigError(f"{path}: 'models' must be a mapping of model name to columns")
    rules: dict[str, dict[str, ColumnRule]] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or set(entry) - {"columns"}:
            raise GovernanceConfigError(f"{path}: model {name!r} needs exactly a 'columns' mapping")
        columns = entry.get("columns") or {}
        if not isinstance(columns, dict):
            raise GovernanceConfigError(f"{path}: model {name!r}: 'columns' must be a mapping")
        key = ".".join(str(name).split(".")[-2:])  # catalog.schema.table works too
        rules[key] = {str(col): _parse_rule(f"{name}.{col}", raw) for col, raw in columns.items()}
    return Governance(rules, path)


def load_governance(project: ProjectInfo | str | Path) -> Governance:
    """Read ``governance.yaml`` from the project folder (no file: nothing declared)."""
    folder = Path(project.project_dir if isinstance(project, ProjectInfo) else project)
    path = folder / GOVERNANCE_FILE
    if not path.exists():
        return Governance({}, path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GovernanceConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_governance(data, path)


class ColumnGraph:
    """Column lineage both ways. A column whose lineage SQLMesh could not compute is treated
    as depending on every column of every parent model: unknown must never mean harmless."""

    def __init__(self, project: ProjectInfo) -> None:
        self.project = project
        self._children: dict[ColumnRef, set[ColumnRef]] = {}
        for model in project.models.values():
            for column in self.columns(model):
                for parent in self.parents(model.fqn, column):
                    self._children.setdefault(parent, set()).add((model.fqn, column))

    @staticmethod
    def columns(model: ModelInfo) -> list[str]:
        names = [name for name, _, _ in model.columns]
        return names + [c for c in model.column_lineage if c not in names]

    def parents(self, fqn: str, column: str) -> list[ColumnRef]:
        model = self.project.models.get(fqn)
        if model is None or model.external:
            return []
        if column in model.column_lineage:
            return [(parent, col) for parent, col in model.column_lineage[column]]
        return [
            (parent, col)
            for parent in model.depends_on
            if parent in self.project.models
            for col in self.columns(self.project.models[parent])
        ]

    def children(self, ref: ColumnRef) -> list[ColumnRef]:
        return sorted(self._children.get(ref, ()))


@dataclass(frozen=True)
class Resolved:
    """A column's level, the path to the column it comes from, and whether it was declared."""

    level: str
    path: tuple[ColumnRef, ...]
    declared: bool


class Classifier:
    """Resolves levels with memoisation; cycles (impossible in SQLMesh) resolve to the default."""

    def __init__(
        self,
        project: ProjectInfo,
        governance: Governance | None = None,
        contracts: Mapping[str, SourceContract] = CONTRACTS,
    ) -> None:
        self.project = project
        self.governance = governance if governance is not None else load_governance(project)
        self.contracts = contracts
        self.graph = ColumnGraph(project)
        self._memo: dict[ColumnRef, Resolved] = {}
        self._active: set[ColumnRef] = set()

    def _source_level(self, model: ModelInfo, column: str) -> str:
        contract = self.contracts.get(model.table) if model.schema == RAW_SCHEMA else None
        if contract is None:
            return DEFAULT_LEVEL
        levels = {c.name: c.classification for c in contract.columns}
        return levels.get(column, DEFAULT_LEVEL)  # ``ds``: the partition date

    def inherited(self, fqn: str, column: str) -> Resolved:
        """The level lineage alone gives a column (ignoring its own declaration)."""
        ref = (fqn, column)
        model = self.project.models.get(fqn)
        if model is None:
            return Resolved(DEFAULT_LEVEL, (ref,), False)
        if model.external:
            return Resolved(self._source_level(model, column), (ref,), False)
        best: Resolved | None = None
        for parent in self.graph.parents(fqn, column):
            resolved = self.resolve(*parent)
            if best is None or RANK[resolved.level] > RANK[best.level]:
                best = resolved
        if best is None:  # computed from no column at all, e.g. count(*)
            return Resolved(DEFAULT_LEVEL, (ref,), False)
        return Resolved(best.level, (ref, *best.path), False)

    def resolve(self, fqn: str, column: str) -> Resolved:
        ref = (fqn, column)
        if ref in self._memo:
            return self._memo[ref]
        if ref in self._active:
            return Resolved(DEFAULT_LEVEL, (ref,), False)
        self._active.add(ref)
        try:
            model = self.project.models.get(fqn)
            rule = self.governance.rule(model, column) if model else None
            result = Resolved(rule.classification, (ref,), True) if rule else self.inherited(fqn, column)
        finally:
            self._active.discard(ref)
        self._memo[ref] = result
        return result


def column_classifications(
    project: ProjectInfo,
    governance: Governance | None = None,
    contracts: Mapping[str, SourceContract] = CONTRACTS,
) -> dict[str, dict[str, str]]:
    """``{model fqn: {column: level}}`` for every model, external ones included."""
    classifier = Classifier(project, governance, contracts)
    return {
        fqn: {column: classifier.resolve(fqn, column).level for column in ColumnGraph.columns(model)}
        for fqn, model in project.models.items()
    }
