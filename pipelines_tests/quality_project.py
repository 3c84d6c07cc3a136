# ruff: noqa: E501 - SQL of the fixture project, kept one statement per line
"""A SQLMesh project the quality code has never seen: every model kind and cron shape.

Each model reads a source table of its own (``src.*``, written by the tests into the warehouse),
so an anomaly seeded into one source shows up in one model only. The warehouse is the
deployment's (``PIPELINES_DATA_DIR/warehouse.duckdb``), where the checks read it.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from pipelines_tests.sqlmesh_projects import CONFIG

EXTERNAL = """\
- name: src.events
  columns: {ts: TIMESTAMP, event_id: BIGINT, user_id: BIGINT, value: DOUBLE}
- name: src.clicks
  columns: {ts: TIMESTAMP, click_id: BIGINT, page: TEXT, dwell: DOUBLE}
- name: src.orders
  columns: {ds: DATE, order_id: BIGINT, customer_id: BIGINT, amount: DOUBLE, channel: TEXT}
- name: src.payments
  columns: {ds: DATE, payment_id: BIGINT, method: TEXT, paid: DOUBLE}
- name: src.visits
  columns: {ds: DATE, visit_id: BIGINT, pages: INT}
- name: src.invoices
  columns: {month_start: DATE, invoice_id: BIGINT, total: DOUBLE}
- name: src.products
  columns: {product_id: BIGINT, category: TEXT, price: DOUBLE}
- name: src.customers
  columns: {customer_id: BIGINT, tier: TEXT, updated_at: TIMESTAMP}
- name: src.accounts
  columns: {account_id: BIGINT, balance: DOUBLE, updated_at: TIMESTAMP}
"""

MODELS = {
    "events_hourly": """MODEL (name qa.events_hourly, kind INCREMENTAL_BY_TIME_RANGE (time_column ts), cron '@hourly');
SELECT ts, event_id, user_id, value FROM src.events WHERE ts BETWEEN @start_ts AND @end_ts""",
    "clicks_quarter": """MODEL (name qa.clicks_quarter, kind INCREMENTAL_BY_TIME_RANGE (time_column ts),
  cron '*/15 * * * *');
SELECT ts, click_id, page, dwell FROM src.clicks WHERE ts BETWEEN @start_ts AND @end_ts""",
    "orders_daily": """MODEL (name qa.orders_daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), cron '@daily');
SELECT ds, order_id, customer_id, amount, channel FROM src.orders WHERE ds BETWEEN @start_ds AND @end_ds""",
    "payments_daily": """MODEL (name qa.payments_daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  cron '0 6 * * *');
SELECT ds, payment_id, method, paid FROM src.payments WHERE ds BETWEEN @start_ds AND @end_ds""",
    "visits_weekly": """MODEL (name qa.visits_weekly, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), cron '@weekly');
SELECT ds, visit_id, pages FROM src.visits WHERE ds BETWEEN @start_ds AND @end_ds""",
    "invoices_monthly": """MODEL (name qa.invoices_monthly, kind INCREMENTAL_BY_TIME_RANGE (time_column month_start),
  cron '@monthly');
SELECT month_start, invoice_id, total FROM src.invoices WHERE month_start BETWEEN @start_ds AND @end_ds""",
    "products": """MODEL (name qa.products, kind FULL);
SELECT product_id, category, price FROM src.products""",
    "customers_scd": """MODEL (name qa.customers_scd,
  kind SCD_TYPE_2_BY_TIME (unique_key customer_id, updated_at_name updated_at));
SELECT customer_id, tier, updated_at FROM src.customers""",
    "accounts": """MODEL (name qa.accounts, kind INCREMENTAL_BY_UNIQUE_KEY (unique_key account_id));
SELECT account_id, balance, updated_at FROM src.accounts""",
    "payments_view": """MODEL (name qa.payments_view, kind VIEW);
SELECT ds, count(*) AS payments FROM qa.payments_daily GROUP BY ds""",
    "channels": """MODEL (name qa.channels, kind SEED (path '../seeds/channels.csv'),
  columns (channel TEXT, label TEXT));""",
}
# the model whose column a test drops (a plan with a breaking change)
PRODUCTS_WITHOUT_CATEGORY = """MODEL (name qa.products, kind FULL);
SELECT product_id, price FROM src.products"""

CRONS = {
    "qa.events_hourly": "@hourly",
    "qa.clicks_quarter": "*/15 * * * *",
    "qa.orders_daily": "@daily",
    "qa.payments_daily": "0 6 * * *",
    "qa.visits_weekly": "@weekly",
    "qa.invoices_monthly": "@monthly",
}


def write_quality_project(root: Path, data_dir: Path) -> Path:
    """The project under ``root/qa_project``; its warehouse is ``data_dir/warehouse.duckdb``."""
    project = root / "qa_project"
    (project / "models").mkdir(parents=True, exist_ok=True)
    (project / "seeds").mkdir(exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    (project / "config.yaml").write_text(
        CONFIG.format(db=data_dir / "warehouse.duckdb", state=root / "qa_state.duckdb")
    )
    (project / "external_models.yaml").write_text(EXTERNAL)
    for name, sql in MODELS.items():
        (project / "models" / f"{name}.sql").write_text(sql + "\n")
    (project / "seeds" / "channels.csv").write_text("channel,label\nweb,Web shop\napp,Mobile app\n")
    return project


def write_sources(
    data_dir: Path,
    first: date,
    last: date,
    *,
    spike: date | None = None,
    null_day: date | None = None,
) -> None:
    """(Re)write every source table for ``first``..``last``: steady volumes with a weekly
    wiggle; ``spike`` gives src.orders 10x its rows that day, ``null_day`` makes half of
    src.payments.method NULL that day."""
    days = (last - first).days + 1
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    try:
        con.execute("CREATE SCHEMA IF NOT EXISTS src")
        start = f"TIMESTAMP '{datetime.combine(first, datetime.min.time())}'"
        con.execute(
            f"CREATE OR REPLACE TABLE src.events AS SELECT {start} + INTERVAL (h) HOUR + INTERVAL (i * 7) MINUTE "
            "AS ts, h * 10 + i AS event_id, (h * 7 + i) % 50 AS user_id, 10 + (h * 13 + i * 7) % 9 AS value "
            f"FROM range({days * 24}) a(h), range(5) b(i)"
        )
        con.execute(
            f"CREATE OR REPLACE TABLE src.clicks AS SELECT {start} + INTERVAL (q * 15) MINUTE + INTERVAL (i) MINUTE "
            "AS ts, q * 10 + i AS click_id, ['/', '/cart', '/buy'][1 + (q + i) % 3] AS page, "
            f"2.0 + (q * 3 + i) % 5 AS dwell FROM range({days * 96}) a(q), range(2) b(i)"
        )
        orders, payments, visits = [], [], []
        for n in range(days):
            day = first + timedelta(days=n)
            count = int(40 * (1 + 0.1 * math.sin(n / 2)))
            repeat = 10 if day == spike else 1
            orders.append(
                f"SELECT DATE '{day}' AS ds, {n} * 100000 + r * 1000 + i AS order_id, i % 30 AS customer_id, "
                f"20.0 + (i * 37) % 50 AS amount, ['web', 'app'][1 + i % 2] AS channel "
                f"FROM range({count}) a(i), range({repeat}) b(r)"
            )
            nulls = 500 if day == null_day else 0
            payments.append(
                f"SELECT DATE '{day}' AS ds, {n} * 1000 + i AS payment_id, "
                f"CASE WHEN (i * 37) % 1000 < {nulls} THEN NULL ELSE ['card', 'bank'][1 + i % 2] END AS method, "
                f"5.0 + (i * 11) % 20 AS paid FROM range(30) a(i)"
            )
            visits.append(
                f"SELECT DATE '{day}' AS ds, {n} * 1000 + i AS visit_id, (1 + i % 6)::INT AS pages FROM range(25) a(i)"
            )
        con.execute("CREATE OR REPLACE TABLE src.orders AS " + " UNION ALL ".join(orders))
        con.execute("CREATE OR REPLACE TABLE src.payments AS " + " UNION ALL ".join(payments))
        con.execute("CREATE OR REPLACE TABLE src.visits AS " + " UNION ALL ".join(visits))
        con.execute(
            "CREATE OR REPLACE TABLE src.invoices AS SELECT (DATE '2026-01-01' + INTERVAL (m) MONTH)::DATE "
            "AS month_start, m * 100 + i AS invoice_id, 100.0 + i AS total FROM range(12) a(m), range(30) b(i)"
        )
        con.execute(
            "CREATE OR REPLACE TABLE src.products AS SELECT i AS product_id, ['a', 'b'][1 + i % 2] AS category, "
            "1.0 + i AS price FROM range(20) a(i)"
        )
        con.execute(
            "CREATE OR REPLACE TABLE src.customers AS SELECT i AS customer_id, ['gold', 'basic'][1 + i % 2] AS tier, "
            "TIMESTAMP '2025-12-01' AS updated_at FROM range(30) a(i)"
        )
        con.execute(
            "CREATE OR REPLACE TABLE src.accounts AS SELECT i AS account_id, 100.0 * i AS balance, "
            "TIMESTAMP '2025-12-01' AS updated_at FROM range(15) a(i)"
        )
    finally:
        con.close()


def check_specs(defs: dg.Definitions) -> dict[tuple[str, str], dg.AssetCheckSpec]:
    """Every check spec of the definitions by (asset, check name): the SQLMesh multi-asset's own
    (its audits and the quality checks made in its step) and any check definitions."""
    found = [s for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) for s in a.check_specs]
    found += [s for c in defs.asset_checks or [] for s in getattr(c, "check_specs", [])]
    return {(s.asset_key.to_user_string(), s.name): s for s in found}
