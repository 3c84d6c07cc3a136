"""Precision and recall of the default quality checks on generated data (issue 28.4).

    uv run python bench/bench_quality.py [--models 60] [--days 60] [--seed 1] [--replicas N]
        [--types volume_low,volume_high,...] [--json out.json]

What is measured is production's code, not a model of it. The bench writes a SQLMesh project of
``--models`` daily ``INCREMENTAL_BY_TIME_RANGE`` models, reads it with the bridge
(``load_project``), takes each model's default rule and freshness policy from it
(``project_rules``, ``freshness_policy_for``, no ``quality.yaml``), and passes every model-day
through the SQLMesh step's own quality hook (``QualityHook.materialized``): the profile SQL on
real DuckDB tables, the history table in the warehouse, ``judge_profiles`` and the schema-change
check against the previous materialization in a real (ephemeral) Dagster instance. Freshness is
the asset's ``FreshnessPolicy``, judged hourly the way Dagster's evaluator does
(``pipelines_tests/freshness.py``) against simulated materialization times. Only SQLMesh's run
loop is left out: the bench writes each day's rows into the model's table itself (65 daily runs
of 60 models through SQLMesh and Dagster would not fit a five-minute budget on 2 cores).

Data: ``--days`` normal days per model with weekday seasonality (four shapes), trend, a monthly
wave, day-level noise, Poisson counts, and per column a base null rate that itself varies day to
day; some models' means move on weekends and drift slowly. Then ``--replicas`` anomaly days: on
each, every anomaly type is seeded on one model of its own (a model gets at most one anomaly;
schema changes stay, as a deployed change does). Counted types: volume ×0.3 and ×3, a 30 % null
burst in one column, a mean shifted by 3 σ of the column's values, a dropped and a retyped column,
a partition materialized 9 h after its tick (grace 6 h). ``subtle_shift`` (3 σ of the *daily mean*,
below the drift check's z = 4 by design) is reported for information and not counted.

Reported: the share of default check evaluations that fail on normal days (warm-up evaluations are
not judged and not counted), the share of seeded anomalies caught by the check meant for them, the
evaluations that fail on clean models on anomaly days, and the same for a static baseline:
row count within ±50 % of the first week's mean, every column's null rate ≤ 5 %, each measure's
mean within the first week's mean ± 3 sd of its daily means, the column list of day 1, and the
newest materialization under 25 h old.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dagster_sqlmesh_bridge import ModelInfo, SQLMeshTranslator, load_project  # noqa: E402
from dagster_sqlmesh_bridge.quality.history import ProfileStore  # noqa: E402
from dagster_sqlmesh_bridge.quality.profile import is_numeric  # noqa: E402
from dagster_sqlmesh_bridge.quality.rules import (  # noqa: E402
    DRIFT,
    NULLS,
    VOLUME,
    load_quality_config,
    project_rules,
)
from dagster_sqlmesh_bridge.quality.schema_change import SCHEMA_CHECK  # noqa: E402
from dagster_sqlmesh_bridge.quality.step import QualityHook  # noqa: E402
from dagster_sqlmesh_bridge.schedules import freshness_policy_for  # noqa: E402
from pipelines_tests.freshness import fresh  # noqa: E402
from pipelines_tests.sqlmesh_projects import CONFIG  # noqa: E402

FRESHNESS = "freshness"
CHECKS = (VOLUME, NULLS, DRIFT, SCHEMA_CHECK, FRESHNESS)
FIRST_DAY = date(2026, 3, 2)  # a Monday
STATUSES = np.array(["new", "paid", "shipped", "returned"])
COLUMNS = {
    "ds": "DATE",
    "event_id": "BIGINT",
    "customer_id": "BIGINT",
    "amount": "DOUBLE",
    "quantity": "INTEGER",
    "discount": "DOUBLE",
    "status": "VARCHAR",
}
PREFIXES = ("orders", "payments", "sessions", "shipments", "refunds", "signups", "tickets", "invoices")
# weekday factors (Monday first) of the four traffic shapes
SHAPES = {
    "flat": (1, 1, 1, 1, 1, 1, 1),
    "retail": (0.95, 0.95, 1, 1, 1.1, 1.3, 1.2),
    "b2b": (1, 1.05, 1.05, 1, 0.95, 0.35, 0.25),
    "midweek": (0.95, 1.15, 1.15, 1.15, 1, 0.8, 0.8),
}
LATE_HOURS = 9.0  # the late partition is materialized this long after its tick (grace: 6 h)


@dataclass(frozen=True)
class Anomaly:
    """A seeded anomaly: what it is, which check is meant to catch it, whether it is counted."""

    label: str
    check: str
    counted: bool = True


ANOMALIES = {
    "volume_low": Anomaly("volume ×0.3", VOLUME),
    "volume_high": Anomaly("volume ×3", VOLUME),
    "null_burst": Anomaly("30 % null burst in a column", NULLS),
    "mean_shift": Anomaly("mean +3 σ of the column's values", DRIFT),
    "dropped_column": Anomaly("dropped column", SCHEMA_CHECK),
    "retyped_column": Anomaly("retyped column", SCHEMA_CHECK),
    "late_partition": Anomaly(f"late partition (+{LATE_HOURS:g} h)", FRESHNESS),
    "subtle_shift": Anomaly("mean +3 σ of the daily mean (information)", DRIFT, counted=False),
}


@dataclass(frozen=True)
class Shape:
    """One model's normal behaviour, drawn once from the seed."""

    base: float
    weekly: tuple[float, ...]
    growth: float
    wave: float
    wave_period: float
    wave_phase: float
    noise: float
    amount_mu: float
    amount_s: float
    weekend_mean: float
    price_trend: float
    quantity_lambda: float
    null_rates: dict[str, float]
    run_offset_minutes: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Shape:
        shape = SHAPES[str(rng.choice(list(SHAPES)))]
        weekly = tuple(float(f * rng.lognormal(0, 0.03)) for f in shape)
        discount_null = float(
            rng.choice(
                [rng.uniform(0, 0.02), rng.uniform(0.05, 0.4), rng.uniform(0.6, 0.95)], p=[0.4, 0.4, 0.2]
            )
        )
        return cls(
            base=float(math.exp(rng.uniform(math.log(200), math.log(5000)))),
            weekly=weekly,
            growth=float(rng.uniform(-0.003, 0.005)),
            wave=float(rng.uniform(0, 0.1)),
            wave_period=float(rng.uniform(25, 35)),
            wave_phase=float(rng.uniform(0, 2 * math.pi)),
            noise=float(rng.uniform(0.03, 0.12)),
            amount_mu=float(rng.uniform(2, 5)),
            amount_s=float(rng.uniform(0.3, 1.0)),
            weekend_mean=float(rng.uniform(0.9, 1.12)) if rng.random() < 0.5 else 1.0,
            price_trend=float(rng.uniform(0, 0.002)),
            quantity_lambda=float(rng.uniform(0.3, 3)),
            null_rates={
                "customer_id": float(rng.uniform(0.01, 0.1)) if rng.random() < 0.3 else 0.0,
                "discount": discount_null,
                "status": float(rng.uniform(0, 0.03)),
            },
            run_offset_minutes=float(rng.uniform(0, 45)),
        )

    def expected_rows(self, day: int) -> float:
        weekday = (FIRST_DAY + timedelta(days=day)).weekday()
        wave = 1 + self.wave * math.sin(2 * math.pi * day / self.wave_period + self.wave_phase)
        return self.base * self.weekly[weekday] * (1 + self.growth) ** day * wave

    def amount_sd(self) -> float:
        """The standard deviation of one day's amounts (lognormal)."""
        mean = math.exp(self.amount_mu + self.amount_s**2 / 2)
        return mean * math.sqrt(math.exp(self.amount_s**2) - 1)


@dataclass(frozen=True)
class Seeded:
    """An anomaly seeded on one model on one day, with the details drawn for it."""

    kind: str
    day: int
    column: str | None = None
    new_type: str | None = None


def day_rows(shape: Shape, day: int, seed: int, index: int, seeded: Seeded | None) -> pa.Table:
    """One normal model-day (Poisson count around the seasonal level), with the anomaly applied."""
    rng = np.random.default_rng([seed, index, day])
    kind = seeded.kind if seeded else None
    level = shape.expected_rows(day) * rng.lognormal(0, shape.noise)
    level *= {"volume_low": 0.3, "volume_high": 3.0}.get(kind or "", 1.0)
    n = max(1, int(rng.poisson(level)))
    weekend = (FIRST_DAY + timedelta(days=day)).weekday() >= 5
    factor = (shape.weekend_mean if weekend else 1.0) * (1 + shape.price_trend) ** day
    amount = rng.lognormal(shape.amount_mu, shape.amount_s, n) * factor
    discount = rng.uniform(0, 0.3, n)
    if kind == "mean_shift":
        if seeded and seeded.column == "discount":
            discount = discount + 3 * 0.3 / math.sqrt(12)
        else:
            amount = amount + 3 * shape.amount_sd() * factor
    if kind == "subtle_shift":
        amount = amount + 3 * shape.amount_sd() * factor / math.sqrt(shape.expected_rows(day))
    values: dict[str, Any] = {
        "ds": np.full(n, np.datetime64(FIRST_DAY + timedelta(days=day), "D")),
        "event_id": np.arange(n, dtype=np.int64) + day * 1_000_000,
        "customer_id": rng.integers(1, 50_000, n),
        "amount": amount,
        "quantity": (1 + rng.poisson(shape.quantity_lambda, n)).astype(np.int32),
        "discount": discount,
        "status": STATUSES[rng.integers(0, len(STATUSES), n)],
    }
    masks = {}
    for column, rate in shape.null_rates.items():  # the day's null rate wobbles around the model's
        day_rate = 1 / (1 + math.exp(-(math.log(rate / (1 - rate)) + rng.normal(0, 0.2)))) if rate else 0.0
        masks[column] = rng.random(n) < day_rate
    if kind == "null_burst" and seeded and seeded.column:
        burst = rng.random(n) < 0.3
        masks[seeded.column] = masks.get(seeded.column, np.zeros(n, bool)) | burst
    types = {"ds": pa.date32(), "quantity": pa.int32(), "status": pa.string()}
    arrays = {name: pa.array(v, type=types.get(name), mask=masks.get(name)) for name, v in values.items()}
    return pa.table(arrays)


def write_project(root: Path, models: int) -> Path:
    """A SQLMesh project of daily models, each reading a source of its own."""
    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "config.yaml").write_text(
        CONFIG.format(db=root / "warehouse.duckdb", state=root / "state.duckdb")
    )
    columns = ", ".join(f"{c}: {'TEXT' if t == 'VARCHAR' else t}" for c, t in COLUMNS.items())
    external = []
    for i in range(models):
        name = f"{PREFIXES[i % len(PREFIXES)]}_{i:03d}"
        external.append(f"- name: src.{name}\n  columns: {{{columns}}}\n")
        (project / "models" / f"{name}.sql").write_text(
            f"MODEL (name bench.{name}, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), cron '@daily');\n"
            f"SELECT {', '.join(COLUMNS)} FROM src.{name} WHERE ds BETWEEN @start_ds AND @end_ds\n"
        )
    (project / "external_models.yaml").write_text("".join(external))
    return project


def plan_anomalies(
    models: int, kinds: Sequence[str], replicas: int, days: int, seed: int
) -> dict[int, Seeded]:
    """Which model gets which anomaly on which day: one model per anomaly, each type once a day."""
    rng = np.random.default_rng([seed, 28])
    order = [int(i) for i in rng.permutation(models)]
    plan: dict[int, Seeded] = {}
    for r in range(replicas):
        for j, kind in enumerate(kinds):
            index = order[r * len(kinds) + j]
            column, new_type = None, None
            if kind == "null_burst":
                column = str(rng.choice(["customer_id", "amount", "quantity", "status"]))
            elif kind == "mean_shift":
                column = str(rng.choice(["amount", "discount"]))
            elif kind == "dropped_column":
                column = str(rng.choice(["discount", "status", "quantity"]))
            elif kind == "retyped_column":
                column, new_type = [
                    ("quantity", "DOUBLE"),
                    ("customer_id", "VARCHAR"),
                    ("amount", "DECIMAL(18,2)"),
                ][int(rng.integers(0, 3))]
            plan[index] = Seeded(kind, days + r, column, new_type)
    return plan


@dataclass
class Tally:
    """Evaluations and failures per (phase, check), and the failing ones for the report."""

    evaluations: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    alarms: list[dict[str, Any]] = field(default_factory=list)

    def add(self, phase: str, check: str, passed: bool, where: dict[str, Any]) -> None:
        self.evaluations[phase, check] += 1
        if not passed:
            self.failures[phase, check] += 1
            if phase != "seeded":
                self.alarms.append({"phase": phase, "check": check, **where})

    def rate(self, phase: str, check: str | None = None) -> tuple[int, int]:
        keys = [k for k in self.evaluations if k[0] == phase and (check is None or k[1] == check)]
        return sum(self.failures[k] for k in keys), sum(self.evaluations[k] for k in keys)


@dataclass
class Baseline:
    """Static thresholds from the first week (the same days the default checks warm up on)."""

    counts: list[int] = field(default_factory=list)
    means: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    schema: dict[str, str] | None = None

    def learn(self, row_count: int, means: dict[str, float | None]) -> None:
        self.counts.append(row_count)
        for column, mean in means.items():
            if mean is not None:
                self.means[column].append(mean)

    def verdicts(
        self, row_count: int, nulls: dict[str, float | None], means: dict[str, float | None]
    ) -> dict[str, bool]:
        center = statistics.fmean(self.counts)
        drift_ok = True
        for column, mean in means.items():
            seen = self.means.get(column, [])
            if mean is None or len(seen) < 2:
                continue
            m, sd = statistics.fmean(seen), statistics.stdev(seen)
            drift_ok &= abs(mean - m) <= 3 * sd
        return {
            VOLUME: abs(row_count - center) <= 0.5 * center,
            NULLS: all(f is None or f <= 0.05 for f in nulls.values()),
            DRIFT: drift_ok,
        }


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def phase_of(day: int, seeded: Seeded | None, days: int) -> str:
    if day < days:
        return "normal"
    if seeded is None or seeded.day > day:
        return "clean"
    return "seeded" if seeded.day == day else "after"


def run(
    models: int = 60,
    days: int = 60,
    seed: int = 1,
    replicas: int | None = None,
    kinds: Sequence[str] = tuple(ANOMALIES),
    keep: Path | None = None,
) -> dict[str, Any]:
    """Generate, run every model-day through the quality hook, and tally both sides."""
    replicas = replicas or max(1, (models * 2 // 3) // len(kinds))
    if replicas * len(kinds) > models:
        raise SystemExit(f"{replicas} × {len(kinds)} anomalies need more than {models} models")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        project = load_project(write_project(root, models), cache_dir=root / "cache")
        translator = SQLMeshTranslator()
        config = load_quality_config(project, translator)
        rules = {r.asset_key: r for r in project_rules(project, translator, config)}
        infos: list[ModelInfo] = sorted(project.internal_models, key=lambda m: m.fqn)
        keys = [translator.get_asset_key(m) for m in infos]
        policies = [freshness_policy_for(m, config.settings_for(m).freshness_grace) for m in infos]
        shapes = [Shape.draw(np.random.default_rng([seed, i])) for i in range(len(infos))]
        plan = plan_anomalies(len(infos), kinds, replicas, days, seed)
        total_days = days + replicas
        warehouse_file = str(root / "warehouse.duckdb")
        con = duckdb.connect(warehouse_file)
        con.execute("CREATE SCHEMA IF NOT EXISTS bench")
        for m in infos:
            cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS.items())
            con.execute(f"CREATE TABLE {m.schema}.{m.table} ({cols})")
        hook = QualityHook(list(rules.values()), keys, connect=lambda: duckdb.connect(warehouse_file))
        sqlmesh_ctx = SimpleNamespace(engine_adapter=SimpleNamespace(cursor=con))
        store = ProfileStore(con)
        default, baseline = Tally(), Tally()
        baselines = [Baseline() for _ in infos]
        failed: dict[int, dict[str, set[str]]] = {i: {"default": set(), "baseline": set()} for i in plan}
        why: dict[int, str] = {}  # the verdict of the check meant for each seeded anomaly
        materialized: list[list[datetime]] = [[] for _ in infos]
        with dg.DagsterInstance.ephemeral() as instance:
            for day in range(total_days):
                partition = (FIRST_DAY + timedelta(days=day)).isoformat()
                context = SimpleNamespace(run_id=f"bench-{day:03d}", instance=instance)
                run_rng = np.random.default_rng([seed, 7, day])
                slow = float(run_rng.uniform(60, 240)) if run_rng.random() < 0.03 else 0.0
                start_delay = float(run_rng.exponential(10)) + slow
                for i, (m, key) in enumerate(zip(infos, keys, strict=True)):
                    s = plan.get(i)
                    today = s if s is not None and s.day == day else None
                    table = f"{m.schema}.{m.table}"
                    if today and today.kind == "dropped_column":
                        con.execute(f'ALTER TABLE {table} DROP COLUMN "{today.column}"')
                    if today and today.kind == "retyped_column":
                        con.execute(f'ALTER TABLE {table} ALTER "{today.column}" TYPE {today.new_type}')
                    rows = day_rows(shapes[i], day, seed, i, today)
                    present = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
                    con.register("bench_rows", rows.select(present))
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM bench_rows")
                    con.unregister("bench_rows")
                    report = hook.materialized(sqlmesh_ctx, m, key, [partition], context)  # type: ignore[arg-type]
                    instance.report_runless_asset_event(
                        dg.AssetMaterialization(key, metadata=report.metadata)
                    )
                    delay = start_delay + shapes[i].run_offset_minutes + float(run_rng.exponential(5))
                    if today and today.kind == "late_partition":
                        delay = LATE_HOURS * 60
                    tick = datetime.combine(FIRST_DAY + timedelta(days=day + 1), datetime.min.time(), UTC)
                    materialized[i].append(tick + timedelta(minutes=delay))
                    phase = phase_of(day, s, days)
                    where = {"model": m.name, "day": partition}
                    for result in report.checks:
                        if _value(result.metadata.get("in_warmup")) is True:
                            continue  # warm-up: not judged
                        if result.check_name == SCHEMA_CHECK and day == 0:
                            continue  # nothing to compare with yet
                        default.add(
                            phase, result.check_name, result.passed, {**where, "why": result.description}
                        )
                        if today and not result.passed:
                            failed[i]["default"].add(result.check_name)
                        if today and result.check_name == ANOMALIES[today.kind].check:
                            why[i] = result.description or ""
                    # the baseline judges the very numbers the default checks judged
                    [point] = store.history(key.to_user_string(), before=partition + "~", limit=1)
                    summary = _value(report.metadata["profile"])["columns"]
                    columns = {c: v["type"] for c, v in summary.items()}
                    rule = rules[key]
                    measures = {
                        c: point.columns[c].mean
                        for c in rule.drift_columns({c: is_numeric(t) for c, t in columns.items()})
                    }
                    b = baselines[i]
                    verdicts: dict[str, bool] = {}
                    if day == 0:
                        b.schema = columns
                    else:
                        verdicts[SCHEMA_CHECK] = columns == b.schema
                    if day < rule.warmup:
                        b.learn(point.row_count, measures)
                    else:
                        nulls = {c: col.null_fraction for c, col in point.columns.items()}
                        verdicts.update(b.verdicts(point.row_count, nulls, measures))
                    for name, ok in verdicts.items():
                        baseline.add(phase, name, ok, where)
                        if today and not ok:
                            failed[i]["baseline"].add(name)
            # freshness: hourly through the day each partition is due, as the daemon would see it
            for i, m in enumerate(infos):
                s = plan.get(i)
                for day in range(total_days):
                    tick = datetime.combine(FIRST_DAY + timedelta(days=day + 1), datetime.min.time(), UTC)
                    moments = [tick + timedelta(minutes=30 + 60 * h) for h in range(24)]
                    ok = all(fresh(policies[i], materialized[i], t) for t in moments)  # type: ignore[arg-type]
                    newest = [max((x for x in materialized[i] if x <= t), default=None) for t in moments]
                    ok_base = all(
                        n is None or t - n < timedelta(hours=25) for t, n in zip(moments, newest, strict=True)
                    )
                    phase = phase_of(day, s, days)
                    where = {"model": m.name, "day": (FIRST_DAY + timedelta(days=day)).isoformat()}
                    default.add(phase, FRESHNESS, ok, where)
                    baseline.add(phase, FRESHNESS, ok_base, where)
                    if s is not None and s.day == day:
                        if not ok:
                            failed[i]["default"].add(FRESHNESS)
                        if not ok_base:
                            failed[i]["baseline"].add(FRESHNESS)
        con.close()
    seeded = [
        {
            "model": infos[i].name,
            "day": (FIRST_DAY + timedelta(days=s.day)).isoformat(),
            "kind": s.kind,
            "column": s.column,
            "new_type": s.new_type,
            "caught": ANOMALIES[s.kind].check in failed[i]["default"],
            "baseline_caught": ANOMALIES[s.kind].check in failed[i]["baseline"],
            "failed": sorted(failed[i]["default"]),
            "baseline_failed": sorted(failed[i]["baseline"]),
            "verdict": why.get(i),
        }
        for i, s in sorted(plan.items(), key=lambda x: (x[1].day, x[1].kind))
    ]
    seconds = time.perf_counter() - started
    settings = {"models": len(infos), "days": days, "replicas": replicas, "seed": seed, "kinds": list(kinds)}
    return summarize(default, baseline, seeded, settings, seconds)


def _pct(failed: int, total: int) -> str:
    return f"{failed:,} / {total:,} ({100 * failed / total:.2f} %)" if total else "—"


def _side(tally: Tally, phase: str) -> dict[str, Any]:
    by_check = {c: dict(zip(("failed", "evaluations"), tally.rate(phase, c), strict=True)) for c in CHECKS}
    failed, total = tally.rate(phase)
    return {
        "failed": failed,
        "evaluations": total,
        "rate": failed / total if total else None,
        "checks": by_check,
    }


def summarize(
    default: Tally, baseline: Tally, seeded: list[dict[str, Any]], settings: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The numbers as JSON, and as the table the docs show."""
    counted = [s for s in seeded if ANOMALIES[s["kind"]].counted]
    recall = {
        side: sum(s[key] for s in counted) / len(counted) if counted else None
        for side, key in (("default", "caught"), ("baseline", "baseline_caught"))
    }
    result: dict[str, Any] = {
        "settings": settings,
        "seconds": round(seconds, 1),
        "normal": {"default": _side(default, "normal"), "baseline": _side(baseline, "normal")},
        "clean_on_anomaly_days": {"default": _side(default, "clean"), "baseline": _side(baseline, "clean")},
        "after_anomaly": {"default": _side(default, "after"), "baseline": _side(baseline, "after")},
        "recall": recall,
        "seeded": seeded,
        "false_alarms": [a for a in default.alarms if a["phase"] != "after"],
        "baseline_false_alarms": len([a for a in baseline.alarms if a["phase"] != "after"]),
    }
    rows = [("normal days: failed evaluations", *(_pct(*t.rate("normal")) for t in (default, baseline)))]
    rows += [(f"  {c}", *(_pct(*t.rate("normal", c)) for t in (default, baseline))) for c in CHECKS]
    rows.append(
        ("clean models on anomaly days: failed", *(_pct(*t.rate("clean")) for t in (default, baseline)))
    )
    rows.append(
        ("models after their anomaly: failed", *(_pct(*t.rate("after")) for t in (default, baseline)))
    )
    n = len(counted)
    rows.append(
        (
            "seeded anomalies caught (counted)",
            *(_pct(sum(s[k] for s in counted), n).replace(" / ", "/") for k in ("caught", "baseline_caught")),
        )
    )
    for kind in settings["kinds"]:
        mine = [s for s in seeded if s["kind"] == kind]
        a = ANOMALIES[kind]
        label = f"  {a.label} → {a.check}"
        rows.append(
            (label, *(f"{sum(s[k] for s in mine)}/{len(mine)}" for k in ("caught", "baseline_caught")))
        )
    table = ["| measure | default checks | static baseline |", "| --- | --- | --- |"]
    table += [
        f"| {r[0].strip() if not r[0].startswith('  ') else '↳ ' + r[0].strip()} | {r[1]} | {r[2]} |"
        for r in rows
    ]
    s = settings
    table.append(
        f"\n{s['models']} models × {s['days']} normal days + {s['replicas']} anomaly days, seed {s['seed']}: "
        f"{seconds:.0f} s"
    )
    result["table"] = "\n".join(table)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=60)
    parser.add_argument("--days", type=int, default=60, help="normal days before the anomaly days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, help="anomaly days, each seeding every type once")
    parser.add_argument("--types", default=",".join(ANOMALIES), help="anomaly types to seed")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="an empty folder to keep the project and warehouse in")
    args = parser.parse_args(argv)
    kinds = [k for k in args.types.split(",") if k]
    unknown = sorted(set(kinds) - set(ANOMALIES))
    if unknown:
        parser.error(f"unknown anomaly types {unknown} (known: {', '.join(ANOMALIES)})")
    result = run(args.models, args.days, args.seed, args.replicas, kinds, args.keep)
    print(result["table"])
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))


if __name__ == "__main__":
    main()
