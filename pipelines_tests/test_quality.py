"""Quality checks on real DuckDB files: SQL profiles, their history, anomalies, schema, freshness.

A synthetic ``marts.fct_orders`` (same columns as the SQLMesh model, weekday-seasonal volume) is
written day by day in SQL; a stand-in asset writes one partition per run and records its profile
the way the SQLMesh bridge should, and the real checks from
``dagster_sqlmesh_bridge.component.quality`` judge it.
"""

import math
import time
import tracemalloc
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from dagster_sqlmesh_bridge.component.quality import quality_hook
from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError
from dagster_sqlmesh_bridge.quality.anomaly import (
    distribution_drift,
    null_rate_drift,
    prediction_k,
    volume_anomaly,
)
from dagster_sqlmesh_bridge.quality.checks import (
    DRIFT,
    ERROR,
    QualityRule,
    build_profile_checks,
    judge_profiles,
    run_profile_checks,
)
from dagster_sqlmesh_bridge.quality.grain import DAY
from dagster_sqlmesh_bridge.quality.history import TABLE as HISTORY
from dagster_sqlmesh_bridge.quality.history import ProfileStore, record_profile
from dagster_sqlmesh_bridge.quality.profile import profile_partitions, profile_table, table_sql
from dagster_sqlmesh_bridge.quality.rules import WARN, project_rules
from dagster_sqlmesh_bridge.quality.schema_change import schema_change_before, schema_change_result
from pipelines.component.translation import PipelinesTranslator
from pipelines.governance import column_classifications
from pipelines.platform.partitions import DAILY
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import warehouse, warehouse_path, warehouse_writer
from pipelines_tests.warehouse_fixture import built_warehouse  # noqa: F401

START = date(2026, 1, 1)
KEY = dg.AssetKey(["marts", "fct_orders"])
TABLE = "marts.fct_orders"
COLUMNS = (
    "order_id", "order_date", "customer_id", "customer_segment",
    "customer_country", "status", "item_count", "order_total_usd",
)  # fmt: skip
# what the bundled quality.yaml declares for marts.fct_orders, and governance classifies its columns
RULE = QualityRule(
    asset_key=KEY,
    table=TABLE,
    partition_column="order_date",
    grain=DAY,
    drift_watch=("order_total_usd", "item_count"),
    sample_columns=("order_id", "order_date", "customer_id", "status"),
    column_levels=dict.fromkeys(COLUMNS, "internal"),
    severity=ERROR,
    severity_overrides={DRIFT: dg.AssetCheckSeverity.WARN},
)
PROFILE_CHECKS = build_profile_checks(RULE, connect=warehouse_writer())
SCHEMA = """
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE IF NOT EXISTS marts.fct_orders (
    order_id BIGINT, order_date DATE, customer_id BIGINT, customer_segment VARCHAR,
    customer_country VARCHAR, status VARCHAR, item_count INTEGER, order_total_usd DOUBLE
);
"""


def day(i: int) -> date:
    return START + timedelta(days=i)


def orders_on(d: date, multiplier: float = 1.0) -> int:
    """Demo-shop-like volume: +30 % at weekends and a slow ±10 % wave."""
    weekend = 1.3 if d.weekday() >= 5 else 1.0
    return int(200 * weekend * (1 + 0.1 * math.sin((d - START).days / 3)) * multiplier)


def write_day(
    con: duckdb.DuckDBPyConnection, d: date, multiplier: float = 1.0, null_share: float = 0.0
) -> None:
    """(Re)write one day of orders in SQL; ``null_share`` of customer_segment becomes NULL."""
    base = (d - START).days * 1_000_000
    con.execute("DELETE FROM marts.fct_orders WHERE order_date = ?", [d])
    con.execute(
        f"""
        INSERT INTO marts.fct_orders
        SELECT {base} + i, DATE '{d}', 1 + hash({base} + i * 7) % 500,
               CASE WHEN hash({base} + i * 13) % 1000 < {int(null_share * 1000)} THEN NULL
                    ELSE ['consumer', 'business', 'vip'][1 + (hash(i * 17) % 3)::INT] END,
               ['US', 'DE', 'FR'][1 + (hash(i * 19) % 3)::INT],
               ['placed', 'shipped', 'cancelled'][1 + (hash({base} + i * 23) % 3)::INT],
               (1 + hash({base} + i * 29) % 4)::INTEGER,
               round(10 + (hash({base} + i * 31) % 20000) / 100.0, 2)
        FROM range({orders_on(d, multiplier)}) t(i)
        """
    )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A local deployment in tmp_path holding an empty ``marts.fct_orders``."""
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    s = Settings.from_env()
    s.data_dir.mkdir(parents=True)
    with duckdb.connect(warehouse_path(s)) as con:
        con.execute(SCHEMA)
    return s


def store_of(s: Settings) -> ProfileStore:
    """The shared history: a table in the warehouse itself."""
    return ProfileStore(lambda: warehouse(s, read_only=False))


@pytest.fixture
def history(settings: Settings) -> Settings:
    """30 normal days written and profiled (one GROUP BY query, as the bridge would)."""
    days = [day(i) for i in range(30)]
    with duckdb.connect(warehouse_path(settings)) as con:
        for d in days:
            write_day(con, d)
        metadata = record_profile(
            con, KEY, TABLE, "order_date", [d.isoformat() for d in days], store=store_of(settings)
        )
    assert metadata["dagster/row_count"].value == sum(orders_on(d) for d in days)
    return settings


class DayConfig(dg.Config):
    multiplier: float = 1.0
    null_share: float = 0.0


@dg.asset(key=KEY, partitions_def=DAILY)
def fct_orders(context: dg.AssetExecutionContext, config: DayConfig) -> dg.MaterializeResult:
    """Stands in for the SQLMesh model: writes its partitions, reports like the bridge should."""
    s = Settings.from_env()
    with duckdb.connect(warehouse_path(s)) as con:
        for key in context.partition_keys:
            write_day(con, date.fromisoformat(key), config.multiplier, config.null_share)
        metadata = record_profile(
            con, KEY, TABLE, "order_date", context.partition_keys, store=ProfileStore(con)
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(deps=[KEY], partitions_def=DAILY, key=["marts", "downstream"])
def downstream() -> None:
    """Skipped when a blocking check on fct_orders fails in the same run."""


def run_day(
    instance: dg.DagsterInstance, partition: str | None = None, tags: dict[str, str] | None = None,
    checks: dg.AssetChecksDefinition = PROFILE_CHECKS, **config: float,
) -> tuple[dg.ExecuteInProcessResult, dict[str, dg.AssetCheckEvaluation]]:  # fmt: skip
    result = dg.materialize(
        [fct_orders, downstream, checks],
        partition_key=partition,
        instance=instance,
        tags=tags,
        run_config=dg.RunConfig({"marts__fct_orders": DayConfig(**config)}),
        raise_on_error=False,
    )
    return result, {e.check_name: e for e in result.get_asset_check_evaluations()}


def value(evaluation: dg.AssetCheckEvaluation, key: str) -> Any:
    return evaluation.metadata[key].value


# -- pure rules ----------------------------------------------------------------------------------


def test_volume_rule_band_seasonality_and_warmup() -> None:
    hist = [(day(i), orders_on(day(i))) for i in range(28)]
    target = day(28)
    normal = volume_anomaly(hist, orders_on(target), new_date=target)
    assert normal.passed and normal.method == "median_mad_weekday" and normal.history_points == 4
    assert normal.low is not None and normal.high is not None
    assert normal.low <= orders_on(target) <= normal.high
    spike = volume_anomaly(hist, 10 * orders_on(target), new_date=target)
    assert not spike.passed and spike.observed is not None and spike.observed > spike.high
    drop = volume_anomaly(hist, orders_on(target) // 2, new_date=target)
    assert not drop.passed and drop.observed is not None and drop.observed < drop.low
    early = volume_anomaly(hist[:10], 10 * orders_on(target), new_date=target)
    # too few same-weekday points for their spread: their median, the spread of all days
    assert not early.passed and early.method == "median_weekday_early"
    for points in range(7):  # warm-up: the first 7 partitions never fire
        warm = volume_anomaly(hist[:points], 1_000_000, new_date=target)
        assert warm.passed and warm.in_warmup and warm.band is None
    flat = volume_anomaly([(day(i), 1000) for i in range(10)], 0, new_date=day(10))
    # sigma >= 15 % of the median while there is no weekday baseline yet
    assert not flat.passed and flat.band == pytest.approx((400, 1600))
    # before the weekday baseline exists, a normal weekend (+30 %) on regular weekdays is no anomaly
    weekdays = [(day(i), 1000 + i % 3) for i in range(10)]
    assert volume_anomaly(weekdays, 1300, new_date=day(10)).passed
    assert not volume_anomaly(weekdays, 300, new_date=day(10)).passed  # -70 % still fires


def test_volume_rule_treats_a_tiny_tables_counting_noise_as_normal() -> None:
    """SQLMesh's `init` example loads one row a day: a day with none, or three, is counting noise
    (sigma >= sqrt(median)), not the alarm it raised before. Large counts keep their 10 %/15 %
    floor, and a tiny table that jumps to dozens of rows still fires."""
    start = date(2026, 1, 5)
    one_a_day = [(start + timedelta(days=i), 1) for i in range(35)]
    target = start + timedelta(days=35)
    for count in (0, 1, 2, 3, 4):
        assert volume_anomaly(one_a_day, count, new_date=target).passed, count
    jump = volume_anomaly(one_a_day, 20, new_date=target)
    assert not jump.passed and jump.band == pytest.approx((0.0, 5.0))
    few = [(start + timedelta(days=i), 25) for i in range(35)]
    assert volume_anomaly(few, 12, new_date=target).passed  # sqrt(25) = 5 > 10 % of 25
    assert not volume_anomaly(few, 3, new_date=target).passed
    big = [(start + timedelta(days=i), 10_000) for i in range(35)]
    assert volume_anomaly(big, 10_000, new_date=target).band == pytest.approx((6_000, 14_000))


def test_volume_rule_knows_the_weekday_before_four_weeks() -> None:
    """A B2B table (weekends at a third of weekdays) in its second week: a normal Saturday passes
    (it failed against the median of all days), a Saturday at 30 % or 3x still fails."""
    level = {5: 300, 6: 250}  # Saturday, Sunday; weekdays 1000
    start = date(2026, 3, 2)  # a Monday
    hist = [
        (start + timedelta(i), level.get((start + timedelta(i)).weekday(), 1000) + i % 3) for i in range(12)
    ]
    saturday = start + timedelta(12)
    assert saturday.weekday() == 5
    normal = volume_anomaly(hist, 290, new_date=saturday)
    assert normal.passed and normal.method == "median_weekday_early" and normal.baseline == 302
    assert not volume_anomaly(hist, 90, new_date=saturday).passed
    assert not volume_anomaly(hist, 900, new_date=saturday).passed
    monday = start + timedelta(14)
    assert volume_anomaly(hist, 1100, new_date=monday).passed
    assert not volume_anomaly(hist, 300, new_date=monday).passed
    assert not volume_anomaly(hist, 3000, new_date=monday).passed


def test_distribution_rule_widens_for_a_short_history() -> None:
    """Seven means whose MAD happens to be tiny: a normal day 4.5 sigmas off passed the fixed
    z = 4 band and failed; the band is now a prediction from 7 points, and narrows as the history
    grows. A mean shifted by 3 sigma of the column's values still fails."""
    means = [100.0, 100.2, 99.9, 100.1, 100.0, 103.0, 97.0]
    normal = distribution_drift(means, 104.5)
    assert normal.passed and normal.score is not None and 4 < normal.score < prediction_k(4.0, 7)
    assert prediction_k(4.0, 7) == pytest.approx(10.1, abs=0.05)
    assert prediction_k(4.0, 56) == pytest.approx(4.37, abs=0.02)
    assert 4.0 < prediction_k(4.0, 1000) < 4.03  # a long history: the plain z again
    assert not distribution_drift(means, 150.0).passed  # +3 sigma of values (sigma ~ 17)
    long = [100.0 + (i % 7 - 3) * 0.5 for i in range(56)]
    assert not distribution_drift(long, 108.0).passed  # 56 points: the band is near 4 sigma


def test_null_and_distribution_rules() -> None:
    fractions = [0.0, 0.01, 0.0, 0.02, 0.0, 0.01, 0.0]
    assert null_rate_drift(fractions, 0.05).passed
    jump = null_rate_drift(fractions, 0.5)
    assert not jump.passed and jump.band == (0.0, pytest.approx(0.2)) and jump.baseline == 0.0
    assert null_rate_drift(fractions[:6], 1.0).in_warmup
    means = [100.0, 102.0, 98.0, 101.0, 99.0, 100.5, 99.5]
    assert distribution_drift(means, 103.0).passed
    shifted = distribution_drift(means, 150.0)
    assert not shifted.passed and shifted.score is not None and shifted.score > 4
    assert shifted.low is not None and shifted.high is not None and shifted.high < 150
    assert distribution_drift(means[:6], 1e9).in_warmup


# -- profiles --------------------------------------------------------------------------------------


def test_profile_is_one_query_and_matches_sql(settings: Settings) -> None:
    with duckdb.connect(warehouse_path(settings)) as con:
        write_day(con, day(0))
        write_day(con, day(1), null_share=0.5)
        profiles = profile_partitions(con, TABLE, "order_date", ["2026-01-01", "2026-01-02", "2026-01-05"])
        expected = con.execute(
            "SELECT count(*), avg(customer_segment IS NULL::INT), avg(order_total_usd), "
            "min(order_total_usd), max(order_total_usd) FROM marts.fct_orders "
            "WHERE order_date = DATE '2026-01-02'"
        ).fetchone()
        whole = profile_table(con, TABLE, None, None)
    assert expected is not None
    p = profiles["2026-01-02"]
    assert p.sql == profiles["2026-01-01"].sql and p.sql.count("SELECT") == 1  # one query
    assert p.row_count == expected[0] == orders_on(day(1))
    segment, total = p.column("customer_segment"), p.column("order_total_usd")
    assert segment.null_fraction == pytest.approx(expected[1])
    assert 0.4 < segment.null_fraction < 0.6 and segment.distinct == 3 and segment.mean is None
    assert total.mean == pytest.approx(expected[2])
    assert (total.min, total.max) == (expected[3], expected[4])
    assert p.column("order_date").min == p.column("order_date").max == "2026-01-02"
    assert profiles["2026-01-05"].row_count == 0  # an empty partition is profiled, not skipped
    assert profiles["2026-01-05"].column("order_id").null_fraction is None
    assert whole.partition is None and whole.row_count == orders_on(day(0)) + orders_on(day(1))
    metadata = p.to_metadata()
    assert metadata["dagster/row_count"].value == p.row_count
    assert [c.name for c in metadata["dagster/column_schema"].columns][:2] == [
        "order_id",
        "order_date",
    ]
    summary = metadata["profile"].value
    assert summary["partitions"] == 1 and summary["row_count"] == p.row_count
    assert summary["columns"]["customer_segment"]["null_fraction"] == pytest.approx(segment.null_fraction)


def test_profile_rejects_unsafe_names(settings: Settings) -> None:
    with duckdb.connect(warehouse_path(settings)) as con:
        for bad in ("marts.fct_orders; DROP TABLE x", "a.b.c.d", "marts.bad-name", "marts.x AS y", ""):
            with pytest.raises((InvalidIdentifierError, ValueError)):
                profile_table(con, bad, None, None)
        # a quoted part (SQLMesh's parsed names are quoted) stays one name, whatever it holds
        assert table_sql('"marts"."x""; DROP TABLE y; --"') == '"marts"."x""; DROP TABLE y; --"'
        with pytest.raises(duckdb.CatalogException, match="does not exist"):
            profile_table(con, '"marts"."x""; DROP TABLE y; --"', None, None)
        with pytest.raises(InvalidIdentifierError):
            profile_partitions(con, TABLE, "order_date", ["2026-01-01' OR 1=1 --"])


def test_store_replaces_same_partition(settings: Settings) -> None:
    store = store_of(settings)
    with duckdb.connect(warehouse_path(settings)) as con:
        for i in range(3):
            write_day(con, day(i))
        keys = [day(i).isoformat() for i in range(3)]
        record_profile(con, KEY, TABLE, "order_date", keys, store=ProfileStore(con))
        write_day(con, day(1), multiplier=2)
        record_profile(con, KEY, TABLE, "order_date", keys[1:2], store=ProfileStore(con))
    points = store.history("marts/fct_orders", before="2026-12-31")
    assert [p.partition for p in points] == keys
    assert points[1].row_count == orders_on(day(1), 2)  # the newer profile supersedes the older
    assert store.history("marts/fct_orders", before=keys[2], limit=1)[0].partition == keys[1]
    with duckdb.connect(warehouse_path(settings), read_only=True) as con:
        # append-only (concurrent writers never conflict): 4 profiles of 8 columns
        assert con.execute(f"SELECT count(*) FROM {HISTORY}").fetchone() == (4 * 8,)


def test_store_reads_back_a_runs_profiles(settings: Settings) -> None:
    """Profiles recorded with a run id come back whole for that run only, and only if every
    partition is there."""
    store = store_of(settings)
    ASSET = "marts/fct_orders"  # noqa: N806
    with duckdb.connect(warehouse_path(settings)) as con:
        for i in range(2):
            write_day(con, day(i))
        keys = [day(i).isoformat() for i in range(2)]
        profiles = profile_partitions(con, TABLE, "order_date", keys)
    store.record_many({ASSET: profiles.values()}, run_id="run-1")
    again = store.profiles_of_run(ASSET, TABLE, "order_date", "run-1", keys)
    assert again is not None and sorted(again) == keys
    for key in keys:
        assert again[key].row_count == profiles[key].row_count
        assert again[key].columns == profiles[key].columns
        assert again[key].sql == profiles[key].sql  # the query that produced them, word for word
    assert store.profiles_of_run(ASSET, TABLE, "order_date", "run-2", keys) is None
    assert store.profiles_of_run(ASSET, TABLE, "order_date", "run-1", [*keys, day(2).isoformat()]) is None
    assert [p.partition for p in store.history(ASSET, before="2026-12-31")] == keys


def test_profiling_20m_rows_stays_in_sql(tmp_path: Path) -> None:
    """20 million rows are profiled with a few MB of Python memory: only aggregates come back."""
    path = str(tmp_path / "big.duckdb")
    with duckdb.connect(path) as con:
        con.execute(
            "CREATE SCHEMA marts; CREATE TABLE marts.big AS SELECT "
            "(DATE '2026-01-01' + (range % 30)::INT) AS d, (range % 997)::DOUBLE AS amount, "
            "CASE WHEN range % 10 = 0 THEN NULL ELSE range % 1000 END AS label "
            "FROM range(20000000)"
        )
    with duckdb.connect(path, read_only=True) as con:
        tracemalloc.start()
        started = time.monotonic()
        whole = profile_table(con, "marts.big", None, None)
        days = profile_partitions(con, "marts.big", "d", [f"2026-01-{i:02d}" for i in range(1, 31)])
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert whole.row_count == 20_000_000 and sum(p.row_count for p in days.values()) == 20_000_000
    assert whole.column("label").null_fraction == pytest.approx(0.1)
    assert whole.column("amount").mean == pytest.approx(498.0, rel=1e-3)
    assert 800 < (whole.column("label").distinct or 0) < 1250  # approximate (HyperLogLog), not exact
    assert peak < 50 * 1024 * 1024, f"Python peak {peak / 1e6:.1f} MB"
    assert elapsed < 30


# -- the Dagster checks ----------------------------------------------------------------------------


def test_normal_day_passes_every_check(history: Settings, ephemeral_instance: dg.DagsterInstance) -> None:
    result, checks = run_day(ephemeral_instance, "2026-01-31")
    assert result.success
    assert set(checks) == {"volume_anomaly", "null_drift", "distribution_drift"}
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
    volume = checks["volume_anomaly"]
    assert value(volume, "observed") == orders_on(day(30))
    assert value(volume, "expected_low") <= value(volume, "observed") <= value(volume, "expected_high")
    assert value(volume, "method") == "median_mad_weekday" and value(volume, "partition") == "2026-01-31"
    assert "GROUP BY" in value(volume, "sql")
    assert downstream.key in {e.asset_key for e in result.get_asset_materialization_events()}
    with duckdb.connect(warehouse_path(history)) as con:  # the checks closed the warehouse
        assert con.execute("SELECT count(*) FROM marts.fct_orders").fetchone() is not None


def test_ten_times_the_rows_fails_volume_and_blocks_downstream(
    history: Settings, ephemeral_instance: dg.DagsterInstance
) -> None:
    result, checks = run_day(ephemeral_instance, "2026-01-31", multiplier=10)
    volume = checks["volume_anomaly"]
    assert not volume.passed and volume.severity == ERROR
    assert value(volume, "observed") == orders_on(day(30), 10)
    low, high = value(volume, "expected_low"), value(volume, "expected_high")
    assert 0 < low < orders_on(day(30)) < high < value(volume, "observed")
    assert value(volume, "expected_band") == f"[{low:.6g}, {high:.6g}]"
    assert value(volume, "baseline") == pytest.approx(orders_on(day(30)), rel=0.15)
    assert value(volume, "history_points") == 4 and not value(volume, "in_warmup")
    assert checks["null_drift"].passed
    # ERROR on a mart is blocking: what depends on it is not materialized in this run
    assert not result.success
    assert downstream.key not in {e.asset_key for e in result.get_asset_materialization_events()}


def test_half_null_column_fails_null_drift_with_sample_rows(
    history: Settings, ephemeral_instance: dg.DagsterInstance
) -> None:
    _, checks = run_day(ephemeral_instance, "2026-01-31", null_share=0.5)
    nulls = checks["null_drift"]
    assert not nulls.passed and nulls.severity == ERROR
    assert value(nulls, "column") == "customer_segment"
    assert 0.4 < value(nulls, "observed") < 0.6 and value(nulls, "baseline") == 0.0
    assert value(nulls, "expected_high") == pytest.approx(0.2)
    sample = value(nulls, "offending_rows").splitlines()
    assert sample[0].startswith("| order_id | order_date |") and 3 <= len(sample) <= 12
    assert all("| NULL |" in row for row in sample[2:])
    assert "IS NULL" in value(nulls, "sql")
    assert checks["volume_anomaly"].passed and checks["distribution_drift"].passed
    per_column = value(nulls, "columns")
    assert per_column["customer_country"]["passed"] and not per_column["customer_segment"]["passed"]


def test_sample_rows_leave_out_classified_and_unclassified_columns(
    history: Settings, ephemeral_instance: dg.DagsterInstance
) -> None:
    """Sample rows land in the event log everyone with the UI reads: a column classified pii,
    masked or confidential is left out, and a rule that knows no classification (a table outside
    the project) shows no row at all; the metadata says why, naming columns, never values."""
    strict = {**RULE.column_levels, "customer_id": "pii", "status": "confidential", "order_id": "masked"}
    checks = build_profile_checks(replace(RULE, column_levels=strict), connect=warehouse_writer())
    _, found = run_day(ephemeral_instance, "2026-01-31", checks=checks, null_share=0.5)
    nulls = found["null_drift"]
    assert not nulls.passed
    assert value(nulls, "offending_rows").splitlines()[0] == "| order_date | customer_segment |"
    assert value(nulls, "offending_rows_withheld") == (
        "columns classified pii: customer_id; columns classified masked: order_id; "
        "columns classified confidential: status"
    )
    assert 'SELECT "order_date", "customer_segment"\n' in value(nulls, "sql")

    checks = build_profile_checks(replace(RULE, column_levels={}), connect=warehouse_writer())
    _, found = run_day(ephemeral_instance, "2026-01-31", checks=checks, null_share=0.5)
    nulls = found["null_drift"]
    assert not nulls.passed and "offending_rows" not in nulls.metadata
    assert value(nulls, "offending_rows_withheld") == (
        "columns without a classification: order_id, order_date, customer_id, status, customer_segment"
    )
    assert "offending rows" not in value(nulls, "sql")


def test_warmup_partitions_never_fire(settings: Settings, ephemeral_instance: dg.DagsterInstance) -> None:
    """Outliers within the first 7 partitions pass (warm-up); the 8th partition is judged."""
    instance = ephemeral_instance
    tags = {
        "dagster/asset_partition_range_start": "2026-01-01",
        "dagster/asset_partition_range_end": "2026-01-06",
    }
    _, checks = run_day(instance, tags=tags)  # a backfill of six days in one run
    volume = checks["volume_anomaly"]
    assert value(volume, "partitions_judged") == value(volume, "partitions_in_warmup") == 6
    assert value(volume, "partitions_failed") == 0 and "failing_partitions" not in volume.metadata
    assert (value(volume, "first_partition"), value(volume, "last_partition")) == (
        day(0).isoformat(),
        day(5).isoformat(),
    )
    _, checks = run_day(instance, "2026-01-07", multiplier=10, null_share=0.9)
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
    assert all(value(e, "in_warmup") for e in checks.values())
    assert value(checks["volume_anomaly"], "history_points") == 6
    result, checks = run_day(instance, "2026-01-08", multiplier=10, null_share=0.9)
    assert not value(checks["volume_anomaly"], "in_warmup")
    assert value(checks["volume_anomaly"], "history_points") == 7
    assert not checks["volume_anomaly"].passed and not checks["null_drift"].passed


def test_check_without_partition_judges_newest_day(
    history: Settings, ephemeral_instance: dg.DagsterInstance
) -> None:
    result = dg.materialize(
        [fct_orders, PROFILE_CHECKS],
        instance=ephemeral_instance,
        selection=dg.AssetSelection.checks(PROFILE_CHECKS),
    )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 3 and all(e.passed for e in evaluations)
    assert {value(e, "partition") for e in evaluations} == {"2026-01-30"}


def test_verdicts_with_nothing_to_compare_keep_the_checks_severity(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    """An empty table or an asset never materialized passes, as its own check: Dagster's default
    severity, ERROR, would show a WARN check as an ERROR one in the UI."""
    con = duckdb.connect()
    empty = judge_profiles(RULE, {}, con, ProfileStore(con), record=False)
    assert {r.check_name: r.severity for r in empty} == {c: RULE.severity_of(c) for c in RULE.checks}
    assert all(r.passed for r in empty) and WARN in {r.severity for r in empty}
    never = schema_change_result(ephemeral_instance, dg.AssetKey(["never", "built"]), WARN)
    assert never.passed and never.severity == WARN


def test_schema_change_check_fails_on_added_or_removed_column(ephemeral_instance: dg.DagsterInstance) -> None:
    """In the SQLMesh step the columns about to be recorded are compared with the newest
    materialization of an earlier run; run alone, the newest two runs are compared."""
    key = dg.AssetKey(["marts", "daily_revenue"])

    class Columns(dg.Config):
        names: list[str]

    @dg.asset(key=key)
    def daily_revenue(config: Columns) -> dg.MaterializeResult:
        schema = dg.TableSchema(columns=[dg.TableColumn(n, "DOUBLE") for n in config.names])
        return dg.MaterializeResult(metadata={"dagster/column_schema": schema})

    instance = ephemeral_instance

    def run(names: list[str]) -> tuple[dg.AssetCheckResult, dg.AssetCheckResult]:
        """(the in-step verdict on ``names`` before they are recorded, the verdict after)"""
        columns = {n: "DOUBLE" for n in names}
        before = schema_change_before(instance, key, columns, time.time(), WARN)
        dg.materialize(
            [daily_revenue],
            instance=instance,
            run_config=dg.RunConfig({"marts__daily_revenue": Columns(names=names)}),
        )
        after = schema_change_result(instance, key, WARN)
        assert before.check_name == after.check_name == "column_schema_change"
        assert (before.passed, before.description) == (after.passed, after.description)
        return before, after

    first = run(["order_date", "revenue_usd"])[0]
    assert first.passed and first.severity == WARN  # nothing to compare with yet, still a WARN check
    assert run(["order_date", "revenue_usd"])[0].passed
    added, _ = run(["order_date", "revenue_usd", "refunds_usd"])
    assert not added.passed and "Added columns: refunds_usd" in (added.description or "")
    removed, _ = run(["order_date", "refunds_usd"])
    assert not removed.passed and "Removed columns: revenue_usd" in (removed.description or "")


def test_definitions_cover_every_model_of_the_bundled_project() -> None:
    from dagster_sqlmesh_bridge import SQLMeshTranslator, load_project
    from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT

    project = load_project(BUNDLED_SQLMESH_PROJECT)
    check_specs = quality_hook(project, SQLMeshTranslator()).check_specs()
    keys = {s.key for s in check_specs}
    assert len(keys) == len(check_specs)  # no check declared twice
    for model in project.internal_models:
        asset = dg.AssetKey([model.schema, model.table])
        expected = {"volume_anomaly", "column_schema_change"}
        if model.time_partitioned:
            expected |= {"null_drift"}
        names = {k.name for k in keys if k.asset_key == asset}
        assert expected <= names, (model.name, names)
    specs = {(s.asset_key.to_user_string(), s.name): s for s in check_specs}
    # the severities the bundled quality.yaml declares
    assert specs[("marts/daily_revenue", "volume_anomaly")].blocking
    assert not specs[("marts/daily_revenue", "distribution_drift")].blocking
    assert not specs[("staging/stg_orders", "null_drift")].blocking
    # FULL models: a row count across runs, nothing per column by default
    assert {k.name for k in keys if k.asset_key == dg.AssetKey(["marts", "dim_customers"])} == {
        "volume_anomaly",
        "column_schema_change",
    }
    # the identifiers of stg_order_items are no measures: no distribution drift on them
    rules = {r.model: r for r in project_rules(project, SQLMeshTranslator())}
    # a failed check samples only what the UI's classification tags allow; a bare translator
    # tags nothing, so its rules sample nothing
    assert rules["staging.stg_web_events"].column_levels == {}
    tagged = PipelinesTranslator(column_classifications(project))
    web_events = {r.model: r for r in project_rules(project, tagged)}["staging.stg_web_events"]
    assert web_events.column_levels["ip_hash"] == "masked"
    assert web_events.column_levels["event_id"] == "internal"
    assert rules["intermediate.int_order_lines"].drift_columns(
        {"order_id": True, "line_total_usd": True, "quantity": True}
    ) == ("line_total_usd", "quantity")


def test_rules_fit_the_real_sqlmesh_tables(built_warehouse: Settings) -> None:  # noqa: F811
    """Every rule's table and columns exist in the warehouse the SQLMesh project builds."""
    from dagster_sqlmesh_bridge import SQLMeshTranslator, load_project
    from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT

    rules = project_rules(load_project(BUNDLED_SQLMESH_PROJECT), SQLMeshTranslator())
    with warehouse(built_warehouse, read_only=False) as con:
        for rule in rules:
            results = run_profile_checks(rule, None, con)
            assert [r.check_name for r in results] == list(rule.checks)
            for r in results:
                assert r.passed, (rule.table, r.check_name, r.description)
                assert r.metadata["method"].value != "missing_column"
                if rule.partition_column:
                    assert r.metadata["partition"].value == "2026-11-22", rule.table
        points = ProfileStore(con).history("marts/daily_revenue", before="2026-12-31")
    assert [p.partition for p in points] == ["2026-11-22"]
