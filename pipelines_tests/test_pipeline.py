"""The embedded default end to end: demo sources -> raw zone -> SQLMesh marts -> checks."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from dagster_sqlmesh_bridge import SQLMeshTranslator, load_project
from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError, sql_string
from dagster_sqlmesh_bridge.quality import checks
from dagster_sqlmesh_bridge.quality.rules import project_rules
from pipelines.platform.lake import Lake
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT
from pipelines.shop.sources import demo
from pipelines.shop.sources.contracts import CONTRACTS
from pipelines.shop.sources.ingest import ContractViolation
from pipelines.shop.sources.readers import attach_shop_database, ingest_database, ingest_files
from pipelines_tests.conftest import Deployment, check_results, materialized_keys

DAYS = ["2026-03-02", "2026-03-03", "2026-03-04"]


def warehouse_rows(deployment: Deployment, sql: str) -> list[tuple]:
    con = duckdb.connect(str(deployment.settings.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_three_days_end_to_end_then_rerun_without_duplicates(deployment: Deployment) -> None:
    result = deployment.run("*", start=DAYS[0], end=DAYS[-1])
    assert result.success
    keys = materialized_keys(result)
    assert dg.AssetKey(["raw", "orders"]) in keys and dg.AssetKey(["marts", "daily_revenue"]) in keys
    expected = {day: demo.order_count(date.fromisoformat(day), 1.0) for day in DAYS}
    revenue = warehouse_rows(
        deployment, "SELECT order_date::VARCHAR, orders, revenue_usd FROM marts.daily_revenue ORDER BY 1"
    )
    assert {day: orders for day, orders, _ in revenue} == expected
    assert all(r > 0 for _, _, r in revenue)
    total = sum(expected.values())
    assert warehouse_rows(deployment, "SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders") == [
        (total, total)
    ]
    assert warehouse_rows(deployment, "SELECT count(*) FROM marts.web_funnel") == [(3,)]
    # the sum over order lines equals the sum over orders: nothing lost between layers
    assert warehouse_rows(
        deployment,
        "SELECT round((SELECT sum(line_amount_usd) FROM intermediate.int_order_lines) - "
        "(SELECT sum(order_total_usd) FROM marts.fct_orders), 0)",
    ) == [(0.0,)]

    lake = Lake(deployment.settings.lake_uri)
    raw_before = lake.get_bytes("raw/orders/ds=2026-03-03/data.parquet")
    again = deployment.run("*", start=DAYS[1])
    assert again.success
    assert lake.get_bytes("raw/orders/ds=2026-03-03/data.parquet") == raw_before  # byte-identical
    assert warehouse_rows(deployment, "SELECT count(*), count(DISTINCT order_id) FROM marts.fct_orders") == [
        (total, total)
    ]
    assert warehouse_rows(deployment, "SELECT count(*) FROM marts.daily_revenue") == [(3,)]
    # no temp files are left where readers look
    assert not [o.key for o in lake.list("raw") if not o.key.endswith("/data.parquet")]


def test_profile_checks_judge_the_profiles_their_own_run_recorded(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLMesh step profiles what it wrote; the profile checks of the same run judge those
    profiles instead of querying every table again. Run alone, they query the tables, and
    reach the very same verdicts."""
    profiled: list[str] = []

    def spy(real: Any) -> Any:
        def profile(con: duckdb.DuckDBPyConnection, table: str, *args: object) -> object:
            profiled.append(table)
            return real(con, table, *args)

        return profile

    monkeypatch.setattr(checks, "profile_partitions", spy(checks.profile_partitions))
    monkeypatch.setattr(checks, "profile_table", spy(checks.profile_table))
    quality_rules = project_rules(load_project(BUNDLED_SQLMESH_PROJECT), SQLMeshTranslator())
    first = deployment.run("*", start=DAYS[0], end=DAYS[1])
    assert first.success
    assert profiled == []
    selection = dg.AssetSelection.checks(
        *(dg.AssetCheckKey(rule.asset_key, check) for rule in quality_rules for check in rule.checks)
    )
    alone = deployment.run(selection, start=DAYS[0], end=DAYS[1])  # type: ignore[arg-type]
    assert alone.success
    assert sorted(profiled) == sorted(rule.table for rule in quality_rules)

    def verdicts(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], tuple[bool, str | None]]:
        return {
            key: (evaluation.passed, evaluation.description)
            for key, evaluation in check_results(result).items()
            if key[1] in checks.PROFILE_CHECKS
        }

    assert len(verdicts(first)) == sum(len(rule.checks) for rule in quality_rules)
    # per partition, the same verdicts; a table profiled whole gets one history point per run,
    # so run alone it is judged again on a point of its own
    per_partition = {
        (rule.asset_key.to_user_string(), check)
        for rule in quality_rules
        if rule.partition_column
        for check in rule.checks
    }
    assert per_partition
    assert {k: v for k, v in verdicts(first).items() if k in per_partition} == {
        k: v for k, v in verdicts(alone).items() if k in per_partition
    }


def test_broken_file_rows_are_quarantined_and_counts_add_up(deployment: Deployment) -> None:
    lake = Lake(deployment.settings.lake_uri)
    good = {
        "event_id": "e1",
        "event_ts": "2026-03-02 10:00:00",
        "session_id": "s1",
        "customer_id": 7,
        "event_type": "page_view",
        "page": "/",
        "ip_address": "10.0.0.1",
    }
    lines = [
        json.dumps(good).encode(),
        json.dumps({**good, "event_id": "e2", "customer_id": "not-a-number"}).encode(),
        json.dumps({**good, "event_id": "e3", "session_id": None}).encode(),
        json.dumps({**good, "event_id": "e4", "event_ts": "2026-03-09 10:00:00"}).encode(),
        b"{this is not json",
        b"\xff\xfe broken encoding",
        json.dumps({**good, "event_id": "e1"}).encode(),  # duplicate key
        json.dumps({**good, "event_id": "e5", "page": "x" * 20_000}).encode(),
        json.dumps([1, 2, 3]).encode(),
        json.dumps({**good, "event_id": "'; DROP TABLE raw.web_events; --"}).encode(),
    ]
    lake.put_bytes(b"\n".join(lines), "landing/web_events/2026-03-02/drop-001.jsonl")
    result = ingest_files(CONTRACTS["web_events"], "2026-03-02", lake)
    assert result.rows_read == 10
    assert result.rows_landed == 2  # e1 and the SQL-looking id, stored as plain data
    assert result.rows_quarantined == 8
    assert result.rows_read == result.rows_landed + result.rows_quarantined
    rejected = [json.loads(x) for x in lake.get_bytes(result.quarantine_key).splitlines()]
    reasons = " | ".join(r["reason"] for r in rejected)
    for expected in (
        "customer_id is not a valid BIGINT",
        "session_id is missing",
        "outside partition",
        "not valid JSON",
        "not valid UTF-8",
        "duplicate key",
        "longer than 10000",
        "not a JSON object",
    ):
        assert expected in reasons
    assert all(r["source"].startswith("landing/web_events/2026-03-02/drop-001.jsonl:") for r in rejected)
    landed = duckdb.sql(
        f"SELECT event_id FROM read_parquet('{lake.url(result.raw_key)}') ORDER BY 1"
    ).fetchall()
    assert landed == [("'; DROP TABLE raw.web_events; --",), ("e1",)]


def test_landed_rows_are_in_key_order_whatever_the_input_order(deployment: Deployment) -> None:
    """Input already in key order skips the sort and the duplicate scan (one streaming pass
    proves both unnecessary); any other order is sorted. Both write the very same bytes."""
    lake = Lake(deployment.settings.lake_uri)
    header = "event_id,event_ts,session_id,customer_id,event_type,page,ip_address\n"
    ids = [f"e{i:03d}" for i in range(40)]
    landed = {}
    for label, order in (("ascending", ids), ("descending", ids[::-1]), ("shuffled", ids[1::2] + ids[::2])):
        rows = "".join(f"{i},2026-03-02 10:00:00,s,1,page_view,/,1.1.1.1\n" for i in order)
        lake.put_bytes((header + rows).encode(), "landing/web_events/2026-03-02/a.csv")
        result = ingest_files(CONTRACTS["web_events"], "2026-03-02", lake)
        assert (result.rows_landed, result.rows_quarantined) == (40, 0)
        landed[label] = lake.get_bytes(result.raw_key)
        written = duckdb.sql(f"SELECT event_id FROM read_parquet('{lake.url(result.raw_key)}')").fetchall()
        assert [r[0] for r in written] == ids, label
    assert landed["ascending"] == landed["descending"] == landed["shuffled"]
    # a duplicate right after its twin is not "increasing": it is still caught
    rows = "".join(
        f"{i},2026-03-02 10:00:00,s,1,page_view,/,1.1.1.1\n" for i in ["e000", "e001", "e001", "e002"]
    )
    lake.put_bytes((header + rows).encode(), "landing/web_events/2026-03-02/a.csv")
    result = ingest_files(CONTRACTS["web_events"], "2026-03-02", lake)
    assert (result.rows_landed, result.rows_quarantined) == (3, 1)
    assert "duplicate key" in lake.get_bytes(result.quarantine_key).decode()


def test_a_database_path_with_a_quote_is_a_plain_string_in_sql(tmp_path: Path) -> None:
    """The source's name is written into a view as a string literal: a quote stays data."""
    sqlite = tmp_path / "o'brien; DROP TABLE x; --" / "shop.sqlite"
    con = duckdb.connect()
    attach_shop_database(con, sqlite_path=str(sqlite), read_only=False)
    demo.seed_shop_database(con, "shop", [date(2026, 3, 2)], 0.2)
    con.close()
    lake = Lake(str(tmp_path / "lake"))
    result = ingest_database(CONTRACTS["orders"], "2026-03-02", lake, {"sqlite_path": str(sqlite)})
    assert result.rows_read == result.rows_landed == demo.order_count(date(2026, 3, 2), 0.2)
    assert sql_string("o'brien") == "'o''brien'"
    with pytest.raises(InvalidIdentifierError):
        sql_string("a\x00b")


def test_missing_column_fails_the_partition_naming_source_column_and_file(deployment: Deployment) -> None:
    lake = Lake(deployment.settings.lake_uri)
    lake.put_bytes(b"event_id,event_ts\ne1,2026-03-02 10:00:00\n", "landing/web_events/2026-03-02/x.csv")
    with pytest.raises(ContractViolation) as err:
        ingest_files(CONTRACTS["web_events"], "2026-03-02", lake)
    message = str(err.value)
    assert "web_events" in message and "session_id" in message and "x.csv" in message
    assert not lake.exists("raw/web_events/ds=2026-03-02/data.parquet")


def test_ingestion_asset_failure_is_clear_in_dagster(deployment: Deployment) -> None:
    lake = Lake(deployment.settings.lake_uri)
    rows = "\n".join(f"e{i},2026-03-02 10:00:00,s,1,page_view,/,1.1.1.1,oops" for i in range(3))
    header = "event_id,event_ts,session_id,customer_id,event_type,page,ip_address,extra\n"
    lake.put_bytes((header + rows).encode(), "landing/web_events/2026-03-02/a.csv")
    bad = "event_id,event_ts,session_id,customer_id,event_type,page,ip_address\n" + "\n".join(
        f"b{i},2026-03-02 10:00:00,s,x{i},page_view,/,1.1.1.1" for i in range(6)
    )
    lake.put_bytes(bad.encode(), "landing/web_events/2026-03-02/b.csv")
    result = deployment.run([dg.AssetKey(["raw", "web_events"])], start="2026-03-02")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error)
    assert "customer_id" in text and "no value is a valid BIGINT" in text and "b.csv" in text
