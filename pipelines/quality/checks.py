"""Dagster asset checks built from quality rules: anomalies, null and distribution drift, freshness.

One multi-asset check per table profiles the partitions of the run with a single SQL query,
compares them with the stored history, records them, and yields the three anomaly checks. The
warehouse is opened read-only for the length of one check and closed at once, so checks never
hold the lock a SQLMesh run needs.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dagster as dg
import duckdb

from pipelines.identifiers import safe_identifier, safe_partition_key
from pipelines.quality.anomaly import (
    AnomalyResult,
    distribution_drift,
    null_rate_drift,
    volume_anomaly,
)
from pipelines.quality.profile import (
    HistoryPoint,
    ProfileStore,
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
from pipelines.settings import Settings
from pipelines.warehouse import warehouse

VOLUME, NULLS, DRIFT, FRESHNESS = "volume_anomaly", "null_drift", "distribution_drift", "freshness"
PROFILE_CHECKS = (VOLUME, NULLS, DRIFT)
CRON_INTERVALS = {
    "@hourly": timedelta(hours=1),
    "@daily": timedelta(days=1),
    "@weekly": timedelta(days=7),
}
SAMPLE_ROWS = 10
# A check that met a long SQLMesh write lock is simply tried again; profiling is idempotent.
RETRY = dg.RetryPolicy(max_retries=2, delay=30)

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR
_RULE_KEYS = {
    "table",
    "partition_column",
    "watch",
    "watch_nulls",
    "sample",
    "severity",
    "severity_overrides",
    "freshness",
    "freshness_grace_hours",
    "freshness_error_after_days",
    "warmup",
    "volume_k",
    "max_null_jump",
    "drift_z",
    "history_window",
}


@dataclass(frozen=True)
class QualityRule:
    """What to check on one table, and how strictly."""

    asset_key: dg.AssetKey
    table: str
    partition_column: str | None = None
    watch: tuple[str, ...] = ()
    watch_nulls: tuple[str, ...] = ()
    sample_columns: tuple[str, ...] = ()
    severity: dg.AssetCheckSeverity = WARN
    severity_overrides: Mapping[str, dg.AssetCheckSeverity] = field(default_factory=dict)
    freshness_cron: str | None = None
    freshness_grace: timedelta = timedelta(hours=6)
    freshness_error_after: timedelta = timedelta(days=3)
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

    @property
    def sample(self) -> tuple[str, ...]:
        cols = self.sample_columns or ((self.partition_column,) if self.partition_column else ())
        return tuple(dict.fromkeys(cols + self.null_columns))

    @property
    def null_columns(self) -> tuple[str, ...]:
        """Null drift watches both lists; distribution drift only ``watch`` (ids have no
        meaningful mean)."""
        return tuple(dict.fromkeys(self.watch + self.watch_nulls))

    @classmethod
    def from_config(cls, key: str, cfg: Mapping[str, Any]) -> "QualityRule":
        """A rule from its config entry, rejecting typos and unsafe names up front."""
        unknown = set(cfg) - _RULE_KEYS
        if unknown:
            raise ValueError(f"quality rule {key}: unknown settings {sorted(unknown)}")
        table_sql(cfg["table"])
        partition_column = cfg.get("partition_column")
        if partition_column is not None:
            safe_identifier(partition_column, "partition column")
        cron = cfg.get("freshness")
        if cron is not None and (cron not in CRON_INTERVALS or not partition_column):
            raise ValueError(
                f"quality rule {key}: freshness needs a partition column and one of "
                f"{sorted(CRON_INTERVALS)}, got {cron!r}"
            )
        overrides = {
            name: dg.AssetCheckSeverity(sev) for name, sev in cfg.get("severity_overrides", {}).items()
        }
        if set(overrides) - {*PROFILE_CHECKS}:
            raise ValueError(f"quality rule {key}: overrides name unknown checks {sorted(overrides)}")
        return cls(
            asset_key=dg.AssetKey.from_user_string(key),
            table=cfg["table"],
            partition_column=partition_column,
            watch=tuple(safe_identifier(c, "watched column") for c in cfg.get("watch", ())),
            watch_nulls=tuple(safe_identifier(c, "watched column") for c in cfg.get("watch_nulls", ())),
            sample_columns=tuple(safe_identifier(c, "sample column") for c in cfg.get("sample", ())),
            severity=dg.AssetCheckSeverity(cfg.get("severity", "WARN")),
            severity_overrides=overrides,
            freshness_cron=cron,
            freshness_grace=timedelta(hours=cfg.get("freshness_grace_hours", 6)),
            freshness_error_after=timedelta(days=cfg.get("freshness_error_after_days", 3)),
            warmup=int(cfg.get("warmup", 7)),
            volume_k=float(cfg.get("volume_k", 4.0)),
            max_null_jump=float(cfg.get("max_null_jump", 0.2)),
            drift_z=float(cfg.get("drift_z", 4.0)),
            history_window=int(cfg.get("history_window", 56)),
        )


def rules_from_config(config: Mapping[str, Mapping[str, Any]]) -> list[QualityRule]:
    return [QualityRule.from_config(key, cfg) for key, cfg in config.items()]


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
    """The three anomaly verdicts for one profiled partition against its earlier partitions."""
    key = ProfileStore.key_of(profile)
    volume = volume_anomaly(
        [(h.day, h.row_count) for h in history],
        profile.row_count,
        new_date=date.fromisoformat(key),
        warmup=rule.warmup,
        k=rule.volume_k,
    )
    present = {c.name: c for c in profile.columns}
    missing = [c for c in rule.null_columns if c not in present]
    nulls = {
        c: null_rate_drift(
            [h.columns[c].null_fraction for h in history if c in h.columns],
            present[c].null_fraction,
            warmup=rule.warmup,
            max_jump=rule.max_null_jump,
        )
        for c in rule.null_columns
        if c in present
    }
    drifts = {
        c: distribution_drift(
            [h.columns[c].mean for h in history if c in h.columns],
            present[c].mean,
            warmup=rule.warmup,
            z=rule.drift_z,
        )
        for c in rule.watch
        if c in present and is_numeric(present[c].type)
    }
    return {
        VOLUME: Outcome(key, volume),
        NULLS: _column_outcome(key, nulls, missing),
        DRIFT: _column_outcome(key, drifts, missing),
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


def sample_sql(rule: QualityRule, profile: TableProfile, check: str, outcome: Outcome) -> str | None:
    """Up to 10 rows behind a failed column check: its NULLs, or the values furthest from normal."""
    column = outcome.column
    present = {c.name for c in profile.columns}
    if check not in (NULLS, DRIFT) or column is None or column not in present:
        return None
    cols = [c for c in (*rule.sample, column) if c in present]
    select = ", ".join(quote(c) for c in dict.fromkeys(cols))
    where = (
        partition_filter(rule.partition_column, profile.partition, profile.partition)
        if rule.partition_column and profile.partition
        else "TRUE"
    )
    if check == NULLS:
        return (
            f"SELECT {select}\nFROM {table_sql(rule.table)}\nWHERE {where} "
            f"AND {quote(column)} IS NULL\nLIMIT {SAMPLE_ROWS}"
        )
    baseline = outcome.result.baseline
    if baseline is None or not math.isfinite(baseline):
        return None
    return (
        f"SELECT {select}\nFROM {table_sql(rule.table)}\nWHERE {where} "
        f"AND {quote(column)} IS NOT NULL\n"
        f"ORDER BY abs({quote(column)} - {float(baseline)!r}) DESC\nLIMIT {SAMPLE_ROWS}"
    )


def _fetch_sample(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or ()]
    return markdown_table(names, cursor.fetchall())


def _what(check: str, column: str | None) -> str:
    if check == VOLUME:
        return "row count"
    kind = "null fraction" if check == NULLS else "mean"
    return f"{kind} of {column}"


def check_metadata(
    decisive: Outcome, outcomes: Sequence[Outcome], sql: str, sample: str | None
) -> dict[str, Any]:
    """The numbers that decided the check, the SQL that produced them, and offending rows."""
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
    if len(outcomes) > 1:
        md["partitions"] = dg.MetadataValue.json(
            {o.partition: {"column": o.column, **o.result.as_dict()} for o in outcomes}
        )
    if sample is not None:
        md["offending_rows"] = dg.MetadataValue.md(sample)
    return md


def _profiles(
    con: duckdb.DuckDBPyConnection, rule: QualityRule, partitions: Sequence[str] | None
) -> dict[str, TableProfile]:
    if not rule.partition_column:
        profile = profile_table(con, rule.table, None, None)
        return {ProfileStore.key_of(profile): profile}
    if not partitions:
        latest = latest_partition(con, rule.table, rule.partition_column)
        partitions = [latest] if latest else []
    return profile_partitions(con, rule.table, rule.partition_column, partitions)


def run_profile_checks(
    rule: QualityRule,
    partitions: Sequence[str] | None,
    settings: Settings,
    selected: Iterable[str] = PROFILE_CHECKS,
    store: ProfileStore | None = None,
    run_id: str | None = None,
) -> list[dg.AssetCheckResult]:
    """Profile ``partitions`` (or the newest one), judge them against history, record them.

    Partitions are taken oldest first and each is recorded before the next is judged, so a
    backfill builds its own history and a re-run compares a day only with the days before it.
    When run ``run_id`` materialized them, the profiles its materialization recorded are judged
    instead of querying the table again.
    """
    store = store or ProfileStore.in_data_dir(settings.data_dir)
    asset = asset_key_string(rule.asset_key)
    selected = [c for c in PROFILE_CHECKS if c in set(selected)]
    reused = (
        store.profiles_of_run(asset, rule.table, rule.partition_column, run_id, partitions)
        if run_id and partitions and rule.partition_column
        else None
    )
    if reused is not None:
        profiles = reused
    else:
        with warehouse(settings, read_only=True) as con:  # held for the one profile query only
            profiles = _profiles(con, rule, partitions)
    if not profiles:
        return [
            dg.AssetCheckResult(
                asset_key=rule.asset_key,
                check_name=check,
                passed=True,
                description=f"{rule.table} has no rows yet: nothing to compare",
            )
            for check in selected
        ]
    outcomes: dict[str, list[Outcome]] = {c: [] for c in PROFILE_CHECKS}
    keys = sorted(profiles)
    # one read of the history for every partition (each open of the file costs ~25 ms): a
    # partition re-profiled here replaces its stored point for the partitions after it
    stored = store.history(asset, before=keys[-1], limit=rule.history_window + len(keys))
    points = {p.partition: p for p in stored}
    for key in keys:
        history = [points[k] for k in sorted(points) if k < key][-rule.history_window :]
        for check, outcome in evaluate_partition(rule, profiles[key], history).items():
            outcomes[check].append(outcome)
        points[key] = HistoryPoint.of(profiles[key])
    if reused is None:
        store.record(asset, [profiles[k] for k in keys])
    verdicts = {check: _combine(outcomes[check]) for check in selected}
    samples = {
        check: query
        for check, (passed, decisive) in verdicts.items()
        if not passed
        and (query := sample_sql(rule, profiles[decisive.partition], check, decisive)) is not None
    }
    fetched: dict[str, str] = {}
    if samples:
        with warehouse(settings, read_only=True) as con:
            fetched = {check: _fetch_sample(con, query) for check, query in samples.items()}
    results = []
    for check, (passed, decisive) in verdicts.items():
        sql = profiles[decisive.partition].sql
        if check in samples:
            sql += f";\n\n-- offending rows\n{samples[check]}"
        results.append(
            dg.AssetCheckResult(
                asset_key=rule.asset_key,
                check_name=check,
                passed=passed,
                severity=rule.severity_of(check),
                description=f"{decisive.partition}: "
                + decisive.result.describe(_what(check, decisive.column)),
                metadata=check_metadata(decisive, outcomes[check], sql, fetched.get(check)),
            )
        )
    return results


def run_partitions(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The daily partitions of the run, or None when the run targets no partition."""
    if context.has_partition_key:
        return [safe_partition_key(context.partition_key)]
    if context.has_partition_key_range:
        r = context.partition_key_range
        start = date.fromisoformat(safe_partition_key(r.start))
        end = date.fromisoformat(safe_partition_key(r.end))
        return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    return None


def _check_name(prefix: str, key: dg.AssetKey) -> str:
    return f"{prefix}_{'__'.join(key.path)}"


def build_profile_checks(
    rules: QualityRule | Sequence[QualityRule],
    *,
    settings: Callable[[], Settings] = Settings.from_env,
) -> dg.AssetChecksDefinition:
    """The volume, null-drift and distribution-drift checks of tables, each from one profile.

    Several tables share one step: checks run after the SQLMesh step anyway, and each step of
    its own cost Dagster more than the checks themselves (measured in bench/bench_pipeline.py).
    """
    rules = [rules] if isinstance(rules, QualityRule) else list(rules)
    by_key = {r.asset_key: r for r in rules}
    specs = [spec for r in rules for spec in _profile_specs(r)]

    @dg.multi_asset_check(
        name=_check_name("quality", rules[0].asset_key) if len(rules) == 1 else "quality_profiles",
        specs=specs,
        can_subset=True,
        retry_policy=RETRY,
        description="Profiles " + ", ".join(r.table for r in rules) + " in SQL and compares with history.",
    )
    def _profile_checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        selected: dict[dg.AssetKey, set[str]] = {}
        for key in context.selected_asset_check_keys:
            selected.setdefault(key.asset_key, set()).add(key.name)
        partitions = run_partitions(context)
        config = settings()
        with ProfileStore.in_data_dir(config.data_dir).session() as store:
            results = [
                (rule, result)
                for rule in (by_key[k] for k in sorted(selected, key=str))
                for result in run_profile_checks(
                    rule, partitions, config, selected[rule.asset_key], store, context.run.run_id
                )
            ]
        for rule, result in results:  # yielded after the history file is closed again
            context.log.info(f"{rule.table} {result.check_name}: {result.description}")
            yield result

    return _profile_checks


def _profile_specs(rule: QualityRule) -> list[dg.AssetCheckSpec]:
    descriptions = {
        VOLUME: f"Row count of the partition within median ± {rule.volume_k}·MAD of earlier ones "
        f"(same weekday when enough history; warm-up {rule.warmup} partitions).",
        NULLS: f"Null fraction of {', '.join(rule.null_columns) or 'no column'} within "
        f"±{rule.max_null_jump} of its median.",
        DRIFT: f"Mean of numeric {', '.join(rule.watch) or 'columns'} within "
        f"{rule.drift_z} robust standard deviations of the usual daily mean.",
    }
    return [
        dg.AssetCheckSpec(
            check, asset=rule.asset_key, description=descriptions[check], blocking=rule.blocking(check)
        )
        for check in PROFILE_CHECKS
    ]


@dataclass(frozen=True)
class FreshnessStatus:
    passed: bool
    severity: dg.AssetCheckSeverity
    latest: date | None
    lag: timedelta | None
    description: str


def freshness_status(
    latest: date | None,
    now: datetime,
    *,
    interval: timedelta,
    grace: timedelta,
    error_after: timedelta,
) -> FreshnessStatus:
    """How long since the newest partition closed: over one interval + grace warns, past
    ``error_after`` it is an error."""
    if latest is None:
        return FreshnessStatus(False, ERROR, None, None, "the table holds no partition at all")
    closed_at = datetime.combine(latest + timedelta(days=1), time(0), UTC)
    lag = now - closed_at
    hours = lag.total_seconds() / 3600
    if lag > error_after:
        return FreshnessStatus(
            False,
            ERROR,
            latest,
            lag,
            f"newest partition {latest} is {hours:.1f} h old, over {error_after} (far overdue)",
        )
    if lag > interval + grace:
        return FreshnessStatus(
            False,
            WARN,
            latest,
            lag,
            f"newest partition {latest} is {hours:.1f} h old, over {interval + grace} (overdue)",
        )
    return FreshnessStatus(True, WARN, latest, lag, f"newest partition {latest} closed {hours:.1f} h ago")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_freshness_checks(
    rules: Sequence[QualityRule],
    *,
    settings: Callable[[], Settings] = Settings.from_env,
    clock: Callable[[], datetime] = _utcnow,
) -> dg.AssetChecksDefinition | None:
    """One freshness check per table with a ``freshness`` cron, judged on the data itself
    (the newest day in the partition column), not on when a run last happened."""
    by_key = {r.asset_key: r for r in rules if r.freshness_cron and r.partition_column}
    if not by_key:
        return None
    specs = [
        dg.AssetCheckSpec(
            FRESHNESS,
            asset=key,
            description=f"Newest {r.partition_column} no older than {r.freshness_cron} + "
            f"{r.freshness_grace} (WARN), {r.freshness_error_after} (ERROR).",
        )
        for key, r in by_key.items()
    ]

    @dg.multi_asset_check(
        name="quality_freshness",
        specs=specs,
        can_subset=True,
        retry_policy=RETRY,
        description="Freshness of the marts, from the newest partition present in each table.",
    )
    def _freshness(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        now = clock()
        with warehouse(settings(), read_only=True) as con:
            for check_key in sorted(context.selected_asset_check_keys, key=str):
                rule = by_key[check_key.asset_key]
                assert rule.partition_column and rule.freshness_cron
                latest_key = latest_partition(con, rule.table, rule.partition_column)
                status = freshness_status(
                    date.fromisoformat(latest_key) if latest_key else None,
                    now,
                    interval=CRON_INTERVALS[rule.freshness_cron],
                    grace=rule.freshness_grace,
                    error_after=rule.freshness_error_after,
                )
                metadata: dict[str, Any] = {
                    "latest_partition": latest_key or "none",
                    "evaluated_at": now.isoformat(),
                    "cron": rule.freshness_cron,
                    "warn_after_hours": (CRON_INTERVALS[rule.freshness_cron] + rule.freshness_grace)
                    / timedelta(hours=1),
                    "error_after_hours": rule.freshness_error_after / timedelta(hours=1),
                    "sql": dg.MetadataValue.md(
                        f"```sql\nSELECT max({quote(rule.partition_column)}) "
                        f"FROM {table_sql(rule.table)}\n```"
                    ),
                }
                if status.lag is not None:
                    metadata["lag_hours"] = status.lag / timedelta(hours=1)
                event = context.instance.get_latest_materialization_event(rule.asset_key)
                if event is not None:
                    metadata["last_materialization"] = dg.MetadataValue.timestamp(event.timestamp)
                yield dg.AssetCheckResult(
                    asset_key=rule.asset_key,
                    check_name=FRESHNESS,
                    passed=status.passed,
                    severity=status.severity,
                    description=status.description,
                    metadata=metadata,
                )

    return _freshness


def build_schema_change_checks(assets: Sequence[dg.AssetKey]) -> Sequence[dg.AssetChecksDefinition]:
    """Dagster's own check: added, removed or retyped columns between the last two
    materializations (needs ``dagster/column_schema`` in the materialization metadata)."""
    return dg.build_column_schema_change_checks(assets=list(assets), severity=WARN)


def build_quality_checks(
    rules: Sequence[QualityRule],
    *,
    settings: Callable[[], Settings] = Settings.from_env,
    clock: Callable[[], datetime] = _utcnow,
    schema_change_assets: Sequence[dg.AssetKey] = (),
) -> list[dg.AssetChecksDefinition]:
    """Profile checks of every rule (one step), freshness of the rules that ask for it, and
    schema-change checks on the rules' tables and on ``schema_change_assets``."""
    checks = [build_profile_checks(rules, settings=settings)] if rules else []
    freshness = build_freshness_checks(rules, settings=settings, clock=clock)
    if freshness is not None:
        checks.append(freshness)
    schema_assets = [*(r.asset_key for r in rules), *schema_change_assets]
    return [*checks, *(build_schema_change_checks(schema_assets) if schema_assets else [])]
