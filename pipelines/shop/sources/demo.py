"""A deterministic demo shop: the same date and scale always give the same rows.

Rows are generated in DuckDB SQL from hashes of their ids, so any day can be re-created
exactly (re-ingestion, crash recovery, benchmarks) and the scale factor reaches tens of
millions of rows in seconds.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import duckdb

EPOCH = date(2025, 1, 1)
CURRENCIES = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
PRODUCT_COUNT = 120


def day_index(day: date) -> int:
    if day < EPOCH:
        raise ValueError(f"demo data starts on {EPOCH}, not {day}")
    return (day - EPOCH).days


def customer_count(day: date, scale: float) -> int:
    return int(scale * (500 + 5 * day_index(day)))


def order_count(day: date, scale: float) -> int:
    weekend = 1.3 if day.weekday() >= 5 else 1.0
    wiggle = 1.0 + 0.1 * math.sin(day_index(day) / 3.0)
    return max(1, int(200 * scale * weekend * wiggle))


def customers_sql(day: date, scale: float) -> str:
    base, per_day = int(500 * scale), max(1, int(5 * scale))
    return f"""
    SELECT i::BIGINT AS customer_id,
           'Customer ' || i AS full_name,
           'customer' || i || '@example.com' AS email,
           ['US','DE','FR','GB','NL','ES'][1 + (hash(i * 31) % 6)::INT] AS country,
           ['consumer','consumer','business','vip'][1 + (hash(i * 37) % 4)::INT] AS segment,
           (DATE '{EPOCH}' + (CASE WHEN i <= {base} THEN 0
                              ELSE ((i - {base} - 1) // {per_day}) + 1 END)::INT) AS signup_date
    FROM range(1, {customer_count(day, scale)} + 1) t(i)
    """


def products_sql() -> str:
    return f"""
    SELECT i::BIGINT AS product_id,
           'Product ' || i AS product_name,
           ['books','garden','kitchen','toys','electronics','sports'][1 + (i % 6)::INT] AS category,
           round(5 + (hash(i * 41) % 19500) / 100.0, 2)::DOUBLE AS unit_price
    FROM range(1, {PRODUCT_COUNT} + 1) t(i)
    """


def orders_sql(day: date, scale: float) -> str:
    base = day_index(day) * 1_000_000
    return f"""
    SELECT ({base} + i)::BIGINT AS order_id,
           (1 + hash(({base} + i) * 43) % {customer_count(day, scale)})::BIGINT AS customer_id,
           (TIMESTAMP '{day}' + to_seconds((hash(({base} + i) * 47) % 86400)::BIGINT)) AS order_ts,
           ['placed','shipped','shipped','shipped','cancelled','returned']
               [1 + (hash(({base} + i) * 53) % 6)::INT] AS status,
           ['USD','USD','EUR','GBP'][1 + (hash(({base} + i) * 59) % 4)::INT] AS currency,
           (1 + hash(({base} + i) * 61) % 999) || ' Main Street, Springfield' AS shipping_address
    FROM range(1, {order_count(day, scale)} + 1) t(i)
    """


def order_items_sql(day: date, scale: float) -> str:
    return f"""
    WITH o AS ({orders_sql(day, scale)}),
    lines AS (
        SELECT o.order_id, o.order_ts, k
        FROM o, range(1, 5) r(k)
        WHERE k <= 1 + hash(o.order_id * 67) % 4
    )
    SELECT (order_id * 10 + k)::BIGINT AS order_item_id,
           order_id,
           (1 + hash(order_id * 71 + k) % {PRODUCT_COUNT})::BIGINT AS product_id,
           (1 + hash(order_id * 73 + k) % 3)::INTEGER AS quantity,
           round(5 + (hash((1 + hash(order_id * 71 + k) % {PRODUCT_COUNT}) * 41) % 19500) / 100.0,
                 2)::DOUBLE AS unit_price,
           order_ts
    FROM lines
    """


def web_events_sql(day: date, scale: float) -> str:
    sessions = max(1, int(300 * scale))
    seed = day_index(day) * 100_000
    return f"""
    WITH s AS (SELECT {seed} + i AS sid FROM range(1, {sessions} + 1) t(i)),
    e AS (SELECT sid, k FROM s, range(1, 7) r(k) WHERE k <= 1 + hash(sid * 79) % 6)
    SELECT 'ev-' || sid || '-' || k AS event_id,
           strftime(TIMESTAMP '{day}' + to_seconds(((hash(sid * 83) % 80000) + k * 30)::BIGINT),
                    '%Y-%m-%d %H:%M:%S') AS event_ts,
           's-' || sid AS session_id,
           CASE WHEN hash(sid * 89) % 10 < 3 THEN NULL
                ELSE 1 + hash(sid * 97) % {customer_count(day, scale)} END AS customer_id,
           CASE WHEN k = 1 THEN 'page_view'
                WHEN k >= 5 THEN 'checkout'
                WHEN k % 2 = 0 THEN 'add_to_cart' ELSE 'page_view' END AS event_type,
           '/products/' || (1 + hash(sid * 101 + k) % {PRODUCT_COUNT}) AS page,
           '10.' || (hash(sid) % 256) || '.' || (hash(sid * 3) % 256) || '.' || (hash(sid * 7) % 256)
               AS ip_address
    FROM e ORDER BY event_id
    """


def fx_rates(day: date) -> list[dict[str, object]]:
    i = day_index(day)
    return [
        {
            "rate_date": day.isoformat(),
            "currency": cur,
            "usd_rate": round(base * (1 + (0.02 * math.sin(i / 7.0) if cur != "USD" else 0.0)), 6),
        }
        for cur, base in CURRENCIES.items()
    ]


DB_TABLES = {
    "customers": "customer_id BIGINT PRIMARY KEY, full_name VARCHAR, email VARCHAR, "
    "country VARCHAR, segment VARCHAR, signup_date DATE",
    "products": "product_id BIGINT PRIMARY KEY, product_name VARCHAR, category VARCHAR, unit_price DOUBLE",
    "orders": "order_id BIGINT PRIMARY KEY, customer_id BIGINT, order_ts TIMESTAMP, "
    "status VARCHAR, currency VARCHAR, shipping_address VARCHAR",
    "order_items": "order_item_id BIGINT PRIMARY KEY, order_id BIGINT, product_id BIGINT, "
    "quantity INTEGER, unit_price DOUBLE, order_ts TIMESTAMP",
}


def seed_shop_database(con: duckdb.DuckDBPyConnection, db: str, days: list[date], scale: float) -> None:
    """Make the attached shop database ``db`` hold the demo rows for ``days`` (idempotent)."""
    for table, columns in DB_TABLES.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {db}.{table} ({columns})")
    if con.execute(f"SELECT count(*) FROM {db}.products").fetchone()[0] == 0:
        con.execute(f"INSERT INTO {db}.products {products_sql()}")
    latest = max(days)
    have = con.execute(f"SELECT coalesce(max(customer_id), 0) FROM {db}.customers").fetchone()[0]
    if have < customer_count(latest, scale):
        con.execute(
            f"INSERT INTO {db}.customers SELECT * FROM ({customers_sql(latest, scale)}) "
            f"WHERE customer_id > {int(have)}"
        )
    for day in days:
        nxt = day + timedelta(days=1)
        window = f"order_ts >= '{day}' AND order_ts < '{nxt}'"
        have_orders = con.execute(f"SELECT count(*) FROM {db}.orders WHERE {window}").fetchone()[0]
        have_items = con.execute(f"SELECT count(*) FROM {db}.order_items WHERE {window}").fetchone()[0]
        want_items = con.execute(f"SELECT count(*) FROM ({order_items_sql(day, scale)})").fetchone()[0]
        if have_orders == order_count(day, scale) and have_items == want_items:
            continue  # both tables complete: a crash between them is repaired on the next call
        for table, sql in (("orders", orders_sql), ("order_items", order_items_sql)):
            con.execute(f"DELETE FROM {db}.{table} WHERE {window}")
            # in key order, as an OLTP database assigns increasing ids to new rows
            con.execute(f"INSERT INTO {db}.{table} SELECT * FROM ({sql(day, scale)}) ORDER BY 1")


WEB_EVENT_FILES = ("events-000.jsonl", "events-001.jsonl")


def write_web_events(con: duckdb.DuckDBPyConnection, day: date, scale: float, folder: Path) -> list[Path]:
    """Drop the day's clickstream as two JSON lines files, as the partner would."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for parity, name in enumerate(WEB_EVENT_FILES):
        path = folder / name
        tmp = folder / f".{path.name}.tmp"
        con.execute(
            f"COPY (SELECT * FROM ({web_events_sql(day, scale)}) "
            f"WHERE hash(event_id) % 2 = {parity} ORDER BY event_id) TO '{tmp}' (FORMAT json)"
        )
        tmp.replace(path)
        paths.append(path)
    return paths


def fx_payload(day: date) -> bytes:
    return json.dumps({"date": day.isoformat(), "data": fx_rates(day), "next_page": None}).encode()
