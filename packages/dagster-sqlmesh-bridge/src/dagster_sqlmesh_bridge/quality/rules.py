"""What to check on each SQLMesh model: defaults derived from the model, overrides from the
project's ``quality.yaml``.

Defaults (no configuration at all), all WARN:

- a time-partitioned model (``INCREMENTAL_BY_TIME_RANGE``) is judged per partition of its own
  grain (SQLMesh's interval unit): volume anomaly, null-rate drift on every column, and
  distribution drift on every numeric column that is not a key;
- FULL, INCREMENTAL_BY_UNIQUE_KEY, SCD type 2 (and the other table kinds) get a row-count anomaly
  across runs: each run's row count is one point of history;
- VIEW, SEED and EMBEDDED models get no profile checks (a view would be recomputed to be
  profiled; a seed changes only with the project). Every model keeps its schema-change check.

A column counts as a **key** (no distribution drift: its mean means nothing) when it is the time
column, part of the model's grain or unique key, checked by a uniqueness audit, or named like an
identifier or a date part (``id``, ``*_id``, ``*_key``, ``*_sk``, ``*_code``, ``*_number``,
``year``, ``month``, ``day``, ``hour``...).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from dagster_sqlmesh_bridge import ModelInfo, ProjectInfo, SQLMeshTranslator
from dagster_sqlmesh_bridge.identifiers import safe_identifier
from dagster_sqlmesh_bridge.quality.grain import Grain, grain_of

VOLUME, NULLS, DRIFT = "volume_anomaly", "null_drift", "distribution_drift"
# the column tag governance sets (``pipelines.governance.classification_tags``), shown in the UI
CLASSIFICATION_TAG = "classification"
# the levels whose values a failed check may show in its sample rows (the event log is visible to
# everyone with the UI); pii, masked, confidential and any column without a level never are
SAMPLE_SAFE_LEVELS = frozenset({"public", "internal"})
PROFILE_CHECKS = (VOLUME, NULLS, DRIFT)
WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
CONFIG_FILE = "quality.yaml"

ACROSS_RUNS_KINDS = {
    "FULL",
    "INCREMENTAL_BY_UNIQUE_KEY",
    "INCREMENTAL_BY_PARTITION",
    "INCREMENTAL_UNMANAGED",
    "SCD_TYPE_2",
    "SCD_TYPE_2_BY_TIME",
    "SCD_TYPE_2_BY_COLUMN",
    "CUSTOM",
}
UNPROFILED_KINDS = {"VIEW", "SEED", "EMBEDDED", "EXTERNAL", "MANAGED"}
_KEY_NAME = re.compile(
    r"^(id|.*_(id|key|sk|code|number|no)|year|quarter|month|week|weekday|day|dow|hour|minute)$", re.I
)
_UNIQUE_AUDITS = {"unique_values", "unique_combination_of_columns", "unique_key"}
_NUMERIC_TYPE = re.compile(
    r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?\d*|DOUBLE|FLOAT\d*|REAL|DECIMAL|NUMERIC)\b", re.I
)


class QualityConfigError(ValueError):
    """A rule in ``quality.yaml`` names a model, column or setting that does not exist."""


@dataclass(frozen=True)
class QualityRule:
    """What to check on one model's table, and how strictly."""

    asset_key: dg.AssetKey
    table: str
    model: str = ""
    partition_column: str | None = None
    grain: Grain | None = None
    null_watch: tuple[str, ...] | None = None  # None: every column the profile finds
    drift_watch: tuple[str, ...] | None = None  # None: numeric non-key columns of the profile
    ignore: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    sample_columns: tuple[str, ...] = ()
    # each column's classification as the UI shows it; a column without one is never sampled
    column_levels: Mapping[str, str] = field(default_factory=dict)
    checks: tuple[str, ...] = PROFILE_CHECKS
    severity: dg.AssetCheckSeverity = WARN
    severity_overrides: Mapping[str, dg.AssetCheckSeverity] = field(default_factory=dict)
    warmup: int = 7
    volume_k: float = 4.0
    max_null_jump: float = 0.2
    drift_z: float = 4.0
    history_window: int = 56

    def severity_of(self, check: str) -> dg.AssetCheckSeverity:
        return self.severity_overrides.get(check, self.severity)

    def blocking(self, check: str) -> bool:
        """ERROR checks stop downstream assets in the same run; WARN ones only report."""
        return self.severity_of(check) == ERROR

    def null_columns(self, present: Sequence[str]) -> tuple[str, ...]:
        """Columns whose null rate is watched, given the columns a profile found."""
        watched = present if self.null_watch is None else self.null_watch
        return tuple(c for c in watched if c not in self.ignore)

    def drift_columns(self, present: Mapping[str, bool]) -> tuple[str, ...]:
        """Columns whose mean is watched, given the profile's columns (name -> numeric)."""
        if self.drift_watch is not None:
            return tuple(c for c in self.drift_watch if c not in self.ignore)
        return tuple(c for c, numeric in present.items() if numeric and c not in {*self.keys, *self.ignore})

    def sample(self, column: str) -> tuple[str, ...]:
        first = self.sample_columns or ((self.partition_column,) if self.partition_column else ())
        return tuple(dict.fromkeys((*first, column)))


# -- quality.yaml ---------------------------------------------------------------------------------


class _Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of each key (for error messages)."""

    lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    """PyYAML's safe loader, recording where every mapping key was written."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    result = _Mapping()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise QualityConfigError(
                f"{key_node.start_mark.name}:{key_node.start_mark.line + 1}: {key!r} is given twice"
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "severity": str,
    "severity_overrides": dict,
    "null_columns": list,
    "distribution_columns": list,
    "ignore_columns": list,
    "sample_columns": list,
    "warmup": int,
    "volume_k": (int, float),
    "max_null_jump": (int, float),
    "drift_z": (int, float),
    "history_window": int,
    "freshness": bool,
    "freshness_grace_hours": (int, float),
    "checks": bool,
}
_COLUMN_SETTINGS = ("null_columns", "distribution_columns", "ignore_columns", "sample_columns")


@dataclass(frozen=True)
class ModelSettings:
    """The effective settings of one model: defaults, then the file's ``defaults``, then its entry."""

    values: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    @property
    def freshness(self) -> bool:
        return bool(self.values.get("freshness", True))

    @property
    def freshness_grace(self) -> timedelta | None:
        hours = self.values.get("freshness_grace_hours")
        return None if hours is None else timedelta(hours=float(hours))


def _name(text: str) -> str:
    return ".".join(part.strip('"`[]').lower() for part in str(text).split("."))


def model_name(model: ModelInfo) -> str:
    """How ``quality.yaml`` names a model: its SQLMesh name (``marts.daily_revenue``)."""
    return _name(model.name)


@dataclass(frozen=True)
class QualityConfig:
    """A project's ``quality.yaml``, validated against the project's models."""

    path: Path | None
    defaults: Mapping[str, Any]
    models: Mapping[str, Mapping[str, Any]]

    def settings_for(self, model: ModelInfo) -> ModelSettings:
        return ModelSettings({**self.defaults, **self.models.get(model_name(model), {})})


def _where(path: Path, lines: Mapping[str, int], key: str) -> str:
    return f"{path}:{lines.get(key, 1)}"


def _validate_settings(
    path: Path, rule: str, entry: Any, model: ModelInfo | None, lines: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One rule's settings: known names, right types, existing columns and checks."""
    if entry is None:
        return {}
    if not isinstance(entry, _Mapping):
        raise QualityConfigError(f"{_where(path, lines or {}, rule)}: rule '{rule}' must be a mapping")
    columns = {c[0] for c in model.columns} if model is not None else set()
    for key, value in entry.items():
        at = _where(path, entry.lines, key)
        if key not in _SETTINGS:
            raise QualityConfigError(
                f"{at}: rule '{rule}': unknown setting {key!r} (known: {', '.join(sorted(_SETTINGS))})"
            )
        expected = _SETTINGS[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise QualityConfigError(f"{at}: rule '{rule}': {key} has the wrong type: {value!r}")
        if key == "severity" and value.upper() not in ("WARN", "ERROR"):
            raise QualityConfigError(f"{at}: rule '{rule}': severity must be WARN or ERROR, got {value!r}")
        if key == "severity_overrides":
            for check, sev in value.items():
                if check not in PROFILE_CHECKS or str(sev).upper() not in ("WARN", "ERROR"):
                    raise QualityConfigError(
                        f"{_where(path, value.lines, check)}: rule '{rule}': severity_overrides "
                        f"takes {', '.join(PROFILE_CHECKS)} with WARN or ERROR, got {check}: {sev!r}"
                    )
        if key in _COLUMN_SETTINGS:
            for column in value:
                try:  # a column of the model is quoted in SQL; only an unknown one must be plain
                    if not (columns and column in columns):
                        safe_identifier(column, "column")
                except ValueError as exc:
                    raise QualityConfigError(f"{at}: rule '{rule}': {exc}") from exc
                if columns and column not in columns:
                    raise QualityConfigError(
                        f"{at}: rule '{rule}': {key} names unknown column {column!r} "
                        f"(the model has: {', '.join(sorted(columns))})"
                    )
        if key in ("warmup", "history_window") and value < 1:
            raise QualityConfigError(f"{at}: rule '{rule}': {key} must be at least 1")
    return dict(entry)


def load_quality_config(project: ProjectInfo, translator: SQLMeshTranslator | None = None) -> QualityConfig:
    """Read and validate ``quality.yaml`` beside the project's models (none: an empty config).

    A typo fails here, when the definitions load, naming the file, the line and the rule.
    """
    path = Path(project.project_dir) / CONFIG_FILE
    if not path.exists():
        return QualityConfig(None, {}, {})
    with path.open() as handle:
        try:
            raw = yaml.load(handle, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise QualityConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        return QualityConfig(path, {}, {})
    if not isinstance(raw, _Mapping):
        raise QualityConfigError(f"{path}:1: expected a mapping with 'defaults' and 'models'")
    for key in raw:
        if key not in ("defaults", "models"):
            raise QualityConfigError(
                f"{_where(path, raw.lines, key)}: unknown top-level key {key!r} (use 'defaults' and 'models')"
            )
    by_name = {model_name(m): m for m in project.internal_models}
    defaults = _validate_settings(path, "defaults", raw.get("defaults"), None, raw.lines)
    models_entry = raw.get("models") or _Mapping()
    if not isinstance(models_entry, _Mapping):
        raise QualityConfigError(f"{_where(path, raw.lines, 'models')}: 'models' must be a mapping")
    models: dict[str, dict[str, Any]] = {}
    for name, entry in models_entry.items():
        key = _name(name)
        if key not in by_name:
            close = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise QualityConfigError(
                f"{_where(path, models_entry.lines, name)}: rule '{name}': unknown model{hint}"
            )
        models[key] = _validate_settings(path, name, entry, by_name[key], models_entry.lines)
    return QualityConfig(path, defaults, models)


# -- rules from models --------------------------------------------------------------------------


def _audit_columns(model: ModelInfo) -> set[str]:
    """Columns a uniqueness audit checks: they identify rows."""
    found: set[str] = set()
    for audit in model.audits:
        if audit.name in _UNIQUE_AUDITS:
            found.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", audit.args.split(":=", 1)[-1]))
    return found


def key_columns(model: ModelInfo) -> tuple[str, ...]:
    """Columns whose mean means nothing: time column, grain, unique key, identifiers by name."""
    declared = {model.time_column or "", *model.grains, *model.unique_key}
    declared |= _audit_columns(model)
    names = [c[0] for c in model.columns]
    return tuple(c for c in names if c in declared or _KEY_NAME.match(c))


def _is_numeric_type(type_sql: str) -> bool:
    return bool(_NUMERIC_TYPE.match(type_sql.strip()))


def profiled(model: ModelInfo) -> bool:
    """Whether a model's table is profiled (and gets profile checks) at all."""
    return model.kind not in UNPROFILED_KINDS and (model.time_partitioned or model.kind in ACROSS_RUNS_KINDS)


def column_levels(schema: dg.TableSchema) -> dict[str, str]:
    """Each column's ``classification`` tag in an asset's column schema (what the UI shows)."""
    return {
        c.name: c.tags[CLASSIFICATION_TAG] for c in schema.columns if CLASSIFICATION_TAG in (c.tags or {})
    }


def rule_for(
    model: ModelInfo, key: dg.AssetKey, settings: ModelSettings, levels: Mapping[str, str] | None = None
) -> QualityRule | None:
    """The checks a model gets: its kind's defaults, adjusted by its settings. ``levels`` are its
    columns' classifications, which decide what a failed check may sample (none: nothing)."""
    if not profiled(model) or settings.get("checks") is False:
        return None
    table = model.sql_name()  # SQLMesh's parsed parts, quoted: any name, never ambiguous
    partitioned = model.time_partitioned
    null_watch = settings.get("null_columns")
    drift_watch = settings.get("distribution_columns")
    checks = [VOLUME]
    if partitioned or null_watch:
        checks.append(NULLS)
    keys = key_columns(model)
    known = {name: _is_numeric_type(t) for name, t, _ in model.columns}
    ignore = tuple(settings.get("ignore_columns") or ())
    default_drift = [c for c, numeric in known.items() if numeric and c not in {*keys, *ignore}]
    if drift_watch or (partitioned and (default_drift or not known)):
        checks.append(DRIFT)
    overrides = {
        name: dg.AssetCheckSeverity(str(sev).upper())
        for name, sev in (settings.get("severity_overrides") or {}).items()
    }
    return QualityRule(
        asset_key=key,
        table=table,
        model=model_name(model),
        partition_column=model.time_column if partitioned else None,
        grain=grain_of(model.interval_unit) if partitioned else None,
        null_watch=tuple(null_watch) if null_watch else None,
        drift_watch=tuple(drift_watch) if drift_watch else None,
        ignore=ignore,
        keys=keys,
        sample_columns=tuple(settings.get("sample_columns") or ()),
        column_levels=dict(levels or {}),
        checks=tuple(checks),
        severity=dg.AssetCheckSeverity(str(settings.get("severity", "WARN")).upper()),
        severity_overrides=overrides,
        warmup=int(settings.get("warmup", 7)),
        volume_k=float(settings.get("volume_k", 4.0)),
        max_null_jump=float(settings.get("max_null_jump", 0.2)),
        drift_z=float(settings.get("drift_z", 4.0)),
        history_window=int(settings.get("history_window", 56)),
    )


def project_rules(
    project: ProjectInfo, translator: SQLMeshTranslator, config: QualityConfig | None = None
) -> list[QualityRule]:
    """One rule per profiled model of the project, in name order; each column's classification is
    read from the translator's column schema, the tags the UI shows."""
    config = config or load_quality_config(project, translator)
    rules = []
    for model in sorted(project.internal_models, key=lambda m: m.fqn):
        levels = column_levels(translator.get_column_schema(model))
        rule = rule_for(model, translator.get_asset_key(model), config.settings_for(model), levels)
        if rule is not None:
            rules.append(rule)
    return rules


def with_checks(rule: QualityRule, checks: Sequence[str]) -> QualityRule:
    return replace(rule, checks=tuple(checks))
