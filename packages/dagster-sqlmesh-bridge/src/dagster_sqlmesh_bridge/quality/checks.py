"""Dagster asset checks built from quality rules: volume anomalies, null and distribution drift.

The checks of SQLMesh models are judged in the SQLMesh step itself, the moment SQLMesh
finishes each model (``dagster_sqlmesh_bridge.quality.step``); this module judges profiles against the
shared history (``judge_profiles``) and makes the checks' specs. ``build_profile_checks`` is the
same checks as a step of their own, for tables SQLMesh does not build. Freshness is
not a check here: it is the asset's ``FreshnessPolicy``, derived from the model's cron
(``dagster_sqlmesh_bridge.schedules.freshness_policy_for``), the one truth Dagster shows.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from dagster_sqlmesh_bridge.quality.anomaly import (
    AnomalyResult,
    distribution_drift,
    null_rate_drift,
    volume_anomaly,
)
from dagster_sqlmesh_bridge.quality.grain import DAY
from dagster_sqlmesh_bridge.quality.history import HistoryPoint, ProfileStore, key_of
from dagster_sqlmesh_bridge.quality.profile import (
    TableProfile,
    asset_key_string,
    is_numeric,
    latest_partition,
    partition_filter,
    profile_partitions,
    profile_table,
    quote,
    table_sql,
)
from dagster_sqlmesh_bridge.quality.rules import (
    DRIFT,
    ERROR,
    NULLS,
    PROFILE_CHECKS,
    SAMPLE_SAFE_LEVELS,
    VOLUME,
    WARN,
    QualityRule,
)
from dagster_sqlmesh_bridge.quality.schema_change import SCHEMA_CHECK

__all__ = [
    "DRIFT",
    "ERROR",
    "NULLS",
    "PROFILE_CHECKS",
    "VOLUME",
    "WARN",
    "QualityRule",
    "build_profile_checks",
    "judge_profiles",
    "quality_check_specs",
    "run_profile_checks",
]

SAMPLE_ROWS = 10
# failing partitions listed in a check's metadata (the counts cover all of them)
MAX_LISTED = 50
# A check that met a long SQLMesh write lock is simply tried again; profiling is idempotent.
RETRY = dg.RetryPolicy(max_retries=2, delay=30)
Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


@dataclass(frozen=True)
class Outcome:
    """One check's verdict on one partition; ``column`` names the deciding column, if any."""

    partition: str
    result: AnomalyResult
    column: str | None = None
    per_column: Mapping[str, AnomalyResult] = field(default_factory=dict)


def _column_outcome(partition: str, results: Mapping[str, AnomalyResult], missing: Sequence[str]) -> Outcome:
    if missing:
        failed = AnomalyResult(False, None, None, None, None, "missing_column", False, 0)
        return Outcome(partition, failed, missing[0], results)
    if not results:
        return Outcome(partition, AnomalyResult(True, None, None, None, None, "no_columns", False, 0))
    failing = {c: r for c, r in results.items() if not r.passed}
    pool = failing or results
    column = max(pool, key=lambda c: abs(pool[c].score or 0.0))
    return Outcome(partition, pool[column], column, results)


def evaluate_partition(
    rule: QualityRule, profile: TableProfile, history: Sequence[HistoryPoint]
) -> dict[str, Outcome]:
    """The anomaly verdicts for one profiled partition against its earlier partitions."""
    key = key_of(profile)
    seasonal = rule.grain is not None and rule.grain == DAY  # weekday baselines only for days
    volume = volume_anomaly(
        [(h.day, h.row_count) for h in history],
        profile.row_count,
        new_date=date.fromisoformat(key[:10]) if seasonal else None,
        warmup=rule.warmup,
        k=rule.volume_k,
    )
    present = {c.name: c for c in profile.columns}
    null_columns = rule.null_columns(list(present))
    drift_columns = rule.drift_columns({n: is_numeric(c.type) for n, c in present.items()})
    missing = [c for c in dict.fromkeys((*null_columns, *drift_columns)) if c not in present]
    nulls = {
        c: null_rate_drift(
            [h.columns[c].null_fraction for h in history if c in h.columns],
            present[c].null_fraction,
            warmup=rule.warmup,
            max_jump=rule.max_null_jump,
        )
        for c in null_columns
        if c in present
    }
    drifts = {
        c: distribution_drift(
            [h.columns[c].mean for h in history if c in h.columns],
            present[c].mean,
            warmup=rule.warmup,
            z=rule.drift_z,
        )
        for c in drift_columns
        if c in present and is_numeric(present[c].type)
    }
    return {
        VOLUME: Outcome(key, volume),
        NULLS: _column_outcome(key, nulls, [c for c in missing if c in null_columns]),
        DRIFT: _column_outcome(key, drifts, [c for c in missing if c in drift_columns]),
    }


def _combine(outcomes: Sequence[Outcome]) -> tuple[bool, Outcome]:
    """All partitions must pass; the first failing one (else the newest) speaks for the check."""
    failing = [o for o in outcomes if not o.result.passed]
    return not failing, (failing[0] if failing else outcomes[-1])


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        text = "NULL" if v is None else str(v)
        return text.replace("|", "\\|").replace("\n", " ")[:80]

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sample_columns(rule: QualityRule, column: str, present: Iterable[str]) -> tuple[list[str], str | None]:
    """The columns a failed check's sample may show, and why the others were left out.

    A check's metadata is in Dagster's event log, readable by everyone with the UI: only columns
    the UI classifies ``public`` or ``internal`` are shown. A ``pii``, ``masked`` or
    ``confidential`` column, or one without a classification (a model whose columns SQLMesh
    could not tell), is left out; the reason names the columns and levels, never a value.
    """
    found = set(present)
    shown: list[str] = []
    withheld: dict[str | None, list[str]] = {}
    for name in dict.fromkeys(c for c in rule.sample(column) if c in found):
        level = rule.column_levels.get(name)
        if level in SAMPLE_SAFE_LEVELS:
            shown.append(name)
        else:
            withheld.setdefault(level, []).append(name)
    reasons = [
        f"columns classified {level}: {', '.join(names)}"
        if level is not None
        else f"columns without a classification: {', '.join(names)}"
        for level, names in sorted(withheld.items(), key=lambda kv: _STRICTEST_FIRST.get(kv[0], 0))
    ]
    return shown, "; ".join(reasons) or None


_STRICTEST_FIRST: dict[str | None, int] = {"pii": -3, "masked": -2, "confidential": -1, None: 1}


def sample_sql(
    rule: QualityRule, profile: TableProfile, check: str, outcome: Outcome
) -> tuple[str | None, str | None]:
    """Up to 10 rows behind a failed column check (its NULLs, or the values furthest from
    normal) over the columns it may show, and which columns were left out and why."""
    column = outcome.column
    present = [c.name for c in profile.columns]
    if check not in (NULLS, DRIFT) or column is None or column not in present:
        return None, None
    cols, withheld = sample_columns(rule, column, present)
    if not cols:
        return None, withheld
    select = ", ".join(quote(c) for c in cols)
    where = (
        partition_filter(rule.partition_column, profile.partition, profile.partition, rule.grain or DAY)
        if rule.partition_column and profile.partition
        else "TRUE"
    )
    if check == NULLS:
        return (
            f"SELECT {select}\nFROM {table_sql(rule.table)}\nWHERE {where} "
            f"AND {quote(column)} IS NULL\nLIMIT {SAMPLE_ROWS}"
        ), withheld
    baseline = outcome.result.baseline
    if baseline is None or not math.isfinite(baseline):
        return None, None
    return (
        f"SELECT {select}\nFROM {table_sql(rule.table)}\nWHERE {where} "
        f"AND {quote(column)} IS NOT NULL\n"
        f"ORDER BY abs({quote(column)} - {float(baseline)!r}) DESC\nLIMIT {SAMPLE_ROWS}"
    ), withheld


def _fetch_sample(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or ()]
    return markdown_table(names, cursor.fetchall())


def _what(check: str, column: str | None) -> str:
    if check == VOLUME:
        return "row count"
    kind = "null fraction" if check == NULLS else "mean"
    return f"{kind} of {column}"


def _span(outcomes: Sequence[Outcome]) -> str:
    first, last = outcomes[0].partition, outcomes[-1].partition
    return first if first == last else f"{first} .. {last}"


def describe_verdict(check: str, decisive: Outcome, outcomes: Sequence[Outcome]) -> str:
    """One line for the UI: the deciding partition's verdict and, for a run of several
    partitions, which were judged against their bands and which were still warming up."""
    verdict = f"{decisive.partition}: " + decisive.result.describe(_what(check, decisive.column))
    if len(outcomes) < 2:
        return verdict
    warm = [o for o in outcomes if o.result.in_warmup]
    judged = [o for o in outcomes if not o.result.in_warmup]
    parts = []
    if warm:
        seen = f"{warm[0].result.history_points}..{warm[-1].result.history_points}"
        parts.append(
            f"{len(warm)} not judged yet ({_span(warm)}, warm-up: {seen} of {warm[0].result.warmup})"
        )
    if judged:
        failed = sum(not o.result.passed for o in judged)
        parts.append(
            f"{len(judged)} judged ({_span(judged)}) each against the band of its earlier partitions, "
            f"{failed} outside it"
        )
    return f"{len(outcomes)} partitions {_span(outcomes)}: {'; '.join(parts)}. {verdict}"


def check_metadata(
    decisive: Outcome,
    outcomes: Sequence[Outcome],
    sql: str,
    sample: str | None,
    withheld: str | None = None,
) -> dict[str, Any]:
    """The numbers that decided the check, the SQL that produced them, offending rows, and
    which columns the rows leave out (classified, so kept out of the event log)."""
    r = decisive.result
    md: dict[str, Any] = {
        "partition": decisive.partition,
        "method": r.method,
        "in_warmup": r.in_warmup,
        "history_points": r.history_points,
        "sql": dg.MetadataValue.md(f"```sql\n{sql}\n```"),
    }
    numbers = {
        "observed": r.observed,
        "baseline": r.baseline,
        "score": r.score,
        "expected_low": r.low,
        "expected_high": r.high,
    }
    md.update({k: float(v) for k, v in numbers.items() if v is not None})
    if r.band is not None:
        md["expected_band"] = f"[{r.low:.6g}, {r.high:.6g}]"
    if decisive.column is not None:
        md["column"] = decisive.column
    if decisive.per_column:
        md["columns"] = dg.MetadataValue.json({c: x.as_dict() for c, x in decisive.per_column.items()})
    if len(outcomes) > 1:  # counts and the failing partitions: the same size for any range
        failing = [o for o in outcomes if not o.result.passed]
        md["partitions_judged"] = len(outcomes)
        md["partitions_failed"] = len(failing)
        md["partitions_in_warmup"] = sum(o.result.in_warmup for o in outcomes)
        md["first_partition"], md["last_partition"] = outcomes[0].partition, outcomes[-1].partition
        if failing:
            md["failing_partitions"] = dg.MetadataValue.json(
                {o.partition: {"column": o.column, **o.result.as_dict()} for o in failing[:MAX_LISTED]}
            )
    if sample is not None:
        md["offending_rows"] = dg.MetadataValue.md(sample)
    if withheld is not None:
        md["offending_rows_withheld"] = withheld
    return md


def _profiles(
    con: duckdb.DuckDBPyConnection, rule: QualityRule, partitions: Sequence[str] | None
) -> dict[str, TableProfile]:
    if not rule.partition_column:
        profile = profile_table(con, rule.table, None, None)
        return {key_of(profile): profile}
    grain = rule.grain or DAY
    if not partitions:
        latest = latest_partition(con, rule.table, rule.partition_column, grain)
        partitions = [latest] if latest else []
    return profile_partitions(con, rule.table, rule.partition_column, partitions, grain)


def rule_partitions(rule: QualityRule, run: tuple[str, str] | None) -> list[str] | None:
    """The partitions of the rule's own grain that the run wrote; None when the run names no
    partition (then the newest partition in the table is judged)."""
    if run is None or rule.partition_column is None:
        return None
    try:
        return (rule.grain or DAY).run_keys(*run) or None
    except ValueError:
        return None


def run_profile_checks(
    rule: QualityRule,
    partitions: Sequence[str] | None,
    con: duckdb.DuckDBPyConnection,
    store: ProfileStore | None = None,
    selected: Iterable[str] = PROFILE_CHECKS,
    run_id: str | None = None,
) -> list[dg.AssetCheckResult]:
    """Profile ``partitions`` (or the newest one), judge them against history, record them.

    Partitions are taken oldest first and each is recorded before the next is judged, so a
    backfill builds its own history and a re-run compares a partition only with the ones
    before it. When run ``run_id`` materialized them, the profiles its materialization recorded
    are judged instead of querying the table again. ``con`` is a writable warehouse connection.
    """
    store = store or ProfileStore(con)
    asset = asset_key_string(rule.asset_key)
    selected = [c for c in PROFILE_CHECKS if c in set(selected) and c in rule.checks]
    if not selected:
        return []
    grain = rule.grain or DAY
    reused = (
        store.profiles_of_run(asset, rule.table, rule.partition_column, run_id, partitions, grain)
        if run_id and (partitions or not rule.partition_column)
        else None
    )
    profiles = reused if reused is not None else _profiles(con, rule, partitions)
    return judge_profiles(rule, profiles, con, store, selected, record=reused is None)


def judge_profiles(
    rule: QualityRule,
    profiles: Mapping[str, TableProfile],
    con: duckdb.DuckDBPyConnection,
    store: ProfileStore,
    selected: Iterable[str] = PROFILE_CHECKS,
    *,
    record: bool = True,
) -> list[dg.AssetCheckResult]:
    """The profile checks' verdicts on ``profiles`` (keyed by ``key_of``) against the history.

    Partitions are judged oldest first, each against the ones before it (a backfill builds its
    own history); with ``record`` they are appended to the history afterwards. A failed column
    check fetches up to 10 offending rows through ``con``, of the columns it may show
    (``sample_columns``).
    """
    asset = asset_key_string(rule.asset_key)
    selected = [c for c in PROFILE_CHECKS if c in set(selected) and c in rule.checks]
    if not selected:
        return []
    if not profiles:
        return [
            dg.AssetCheckResult(
                asset_key=rule.asset_key,
                check_name=check,
                passed=True,
                severity=rule.severity_of(check),
                description=f"{rule.table} has no rows yet: nothing to compare",
            )
            for check in selected
        ]
    outcomes: dict[str, list[Outcome]] = {c: [] for c in PROFILE_CHECKS}
    keys = sorted(profiles)  # every key shape sorts chronologically as text
    # one read of the history for every partition: a partition re-profiled here replaces its
    # stored point for the partitions after it
    stored = store.history(asset, before=keys[-1], limit=rule.history_window + len(keys))
    points = {p.partition: p for p in stored}
    for key in keys:
        history = [points[k] for k in sorted(points) if k < key][-rule.history_window :]
        for check, outcome in evaluate_partition(rule, profiles[key], history).items():
            outcomes[check].append(outcome)
        points[key] = HistoryPoint.of(profiles[key])
    if record:
        store.record(asset, [profiles[k] for k in keys])
    verdicts = {check: _combine(outcomes[check]) for check in selected}
    results = []
    for check, (passed, decisive) in verdicts.items():
        sql = profiles[decisive.partition].sql
        sample = None
        query, withheld = None, None
        if not passed:
            query, withheld = sample_sql(rule, profiles[decisive.partition], check, decisive)
        if query is not None:
            sample = _fetch_sample(con, query)
            sql += f";\n\n-- offending rows\n{query}"
        results.append(
            dg.AssetCheckResult(
                asset_key=rule.asset_key,
                check_name=check,
                passed=passed,
                severity=rule.severity_of(check),
                description=describe_verdict(check, decisive, outcomes[check]),
                metadata=check_metadata(decisive, outcomes[check], sql, sample, withheld),
            )
        )
    return results


def run_range(
    context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext,
) -> tuple[str, str] | None:
    """The first and last partition key of the run, or None when it targets no partition."""
    if context.has_partition_key:
        return context.partition_key, context.partition_key
    if context.has_partition_key_range:
        r = context.partition_key_range
        return r.start, r.end
    return None


def _check_name(prefix: str, key: dg.AssetKey) -> str:
    return f"{prefix}_{'__'.join(key.path)}"


def build_profile_checks(
    rules: QualityRule | Sequence[QualityRule],
    *,
    connect: Connect,
    name: str | None = None,
) -> dg.AssetChecksDefinition:
    """The volume, null-drift and distribution-drift checks of tables, each from one profile.

    Several tables share one step: checks run after the SQLMesh step anyway, and each step of
    its own cost Dagster more than the checks themselves (measured in bench/bench_pipeline.py).
    ``connect`` opens a writable connection to the warehouse (the history table lives there).
    """
    rules = [rules] if isinstance(rules, QualityRule) else list(rules)
    by_key = {r.asset_key: r for r in rules}
    specs = [spec for r in rules for spec in _profile_specs(r)]
    opener = connect

    @dg.multi_asset_check(
        name=name or (_check_name("quality", rules[0].asset_key) if len(rules) == 1 else "quality_profiles"),
        specs=specs,
        can_subset=True,
        retry_policy=RETRY,
        description=f"Profiles {len(rules)} table(s) in SQL and compares them with their history.",
    )
    def _profile_checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        selected: dict[dg.AssetKey, set[str]] = {}
        for key in context.selected_asset_check_keys:
            selected.setdefault(key.asset_key, set()).add(key.name)
        run = run_range(context)
        results: list[tuple[QualityRule, dg.AssetCheckResult]] = []
        with opener() as con:  # one connection for the history and every query of the step
            store = ProfileStore(con)
            for rule in (by_key[k] for k in sorted(selected, key=str)):
                partitions = rule_partitions(rule, run)
                checks = selected[rule.asset_key]
                for result in run_profile_checks(rule, partitions, con, store, checks, context.run.run_id):
                    results.append((rule, result))
        for _, result in results:  # yielded after the warehouse is closed again (no log line: see below)
            yield result

    return _profile_checks


def _profile_specs(rule: QualityRule) -> list[dg.AssetCheckSpec]:
    unit = f"{rule.grain.name} partition" if rule.grain else "run"
    nulls = "every column" if rule.null_watch is None else ", ".join(rule.null_watch)
    drift = "numeric non-key columns" if rule.drift_watch is None else ", ".join(rule.drift_watch)
    ignored = f" (ignoring {', '.join(rule.ignore)})" if rule.ignore else ""
    descriptions = {
        VOLUME: f"Row count of each {unit} within median ± {rule.volume_k}·MAD-sigma of the earlier "
        f"ones (warm-up {rule.warmup}).",
        NULLS: f"Null fraction of {nulls}{ignored} within ±{rule.max_null_jump} of its median "
        f"per {unit} (warm-up {rule.warmup}).",
        DRIFT: f"Mean of {drift}{ignored} within {rule.drift_z} robust standard deviations of the "
        f"usual {unit} mean (warm-up {rule.warmup}).",
    }
    return [
        dg.AssetCheckSpec(
            check,
            asset=rule.asset_key,
            description=descriptions[check],
            blocking=rule.blocking(check),
            metadata={"quality/severity": rule.severity_of(check).value},
        )
        for check in rule.checks
    ]


def schema_check_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=key,
        description="Columns added, removed or retyped since the previous run's materialization.",
    )


def quality_check_specs(key: dg.AssetKey, rule: QualityRule | None) -> list[dg.AssetCheckSpec]:
    """Every quality check of one asset: its profile checks (when it has a rule) and its
    schema-change check."""
    return [*(_profile_specs(rule) if rule is not None else []), schema_check_spec(key)]
