"""Malformed input, generated: ingestion either refuses a partition clearly or accounts for every row.

Hypothesis writes landing files (JSON lines, CSV, empty, wrongly encoded, ragged, huge fields,
non-objects, SQL-looking text, out-of-partition timestamps…) and rates-API payloads (non-JSON,
non-objects, broken pages…). For each the property is one of:

* a ``ContractViolation`` naming the source, a contract column and the file or URL,
* for the HTTP API, an ``HttpSourceError`` naming the URL,
* success where rows_read == rows_landed + rows_quarantined, the Parquet file holds exactly
  rows_landed rows that satisfy the contract, and the quarantine file holds one JSON line per
  quarantined row.

Never another exception. The default run is derandomized (same examples every time, so CI is
stable); ``-m slow`` runs more, random examples.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError, safe_file_name
from pipelines.platform.lake import Lake
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract
from pipelines.shop.sources.ingest import ContractViolation, IngestResult, quarantine_key, raw_key
from pipelines.shop.sources.readers import (
    HttpSourceError,
    fetch_json,
    ingest_files,
    ingest_http,
    landing_prefix,
)
from pipelines_tests.services import S3Env

DAY = "2026-05-04"
FILES = CONTRACTS["web_events"]
HTTP = CONTRACTS["fx_rates"]
SQLISH = [
    "'; DROP TABLE raw.web_events; --",
    "1 OR 1=1",
    '" OR ""="',
    "x'); DELETE FROM marts.fct_orders; --",
    "$(rm -rf /)",
    "{{7*7}}",
    "../../etc/passwd",
]
HUGE = 200_000  # over csv's default field limit (131072) and MAX_TEXT_LENGTH (10000)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def slow_settings(examples: int) -> settings:
    return settings(fuzz_settings(examples), derandomize=False)


# ---------------------------------------------------------------------------------- values

day = date.fromisoformat(DAY)
inside_ts = st.datetimes(
    min_value=datetime(day.year, day.month, day.day), max_value=datetime(day.year, day.month, day.day, 23, 59)
).map(lambda d: d.isoformat(sep=" "))
outside_ts = st.sampled_from(
    [
        f"{day - timedelta(days=1)} 23:59:59",
        f"{day + timedelta(days=1)} 00:00:00",
        "1970-01-01 00:00:00",
        "9999-12-31 23:59:59",
    ]
)
bad_ts = st.sampled_from(["yesterday", "2026-13-01 00:00:00", "2026-05-04 25:00", "", "NaN", "294247-01-10"])
weird_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(SQLISH),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.just("x" * (10_001)),
    st.just("\x00nul\x00"),
    st.just('line\nbreak,"quoted"'),
)
wrong_type = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def good_value(source: SourceContract, column: str) -> st.SearchStrategy[Any]:
    col = next(c for c in source.columns if c.name == column)
    if column in ("event_ts",):
        return inside_ts
    if column == "rate_date":
        return st.just(DAY)
    if column == "event_type":
        return st.sampled_from(["page_view", "add_to_cart", "checkout"])
    if column == "currency":
        return st.sampled_from(["EUR", "USD", "GBP", "JPY"])
    if col.type in ("BIGINT", "INTEGER"):
        return st.integers(min_value=0, max_value=10**9)
    if col.type == "DOUBLE":
        return st.floats(min_value=0.001, max_value=1e6)
    if column.endswith("_id"):
        return st.text("abcdef0123456789", min_size=1, max_size=8)
    return st.text(max_size=15)


def bad_value(column: str) -> st.SearchStrategy[Any]:
    options = [st.none(), weird_text, wrong_type]
    if column in ("event_ts", "rate_date"):
        options += [outside_ts, bad_ts]
    return st.one_of(*options)


@st.composite
def records(draw: st.DrawFn, source: SourceContract) -> dict[str, Any]:
    """A record that is mostly right: each column is good, bad, or left out."""
    record: dict[str, Any] = {}
    for col in source.columns:
        choice = draw(st.sampled_from(["good"] * 6 + ["bad", "missing"]))
        if choice == "good":
            record[col.name] = draw(good_value(source, col.name))
        elif choice == "bad":
            record[col.name] = draw(bad_value(col.name))
    if draw(st.integers(0, 9)) == 0:
        record[draw(st.sampled_from(["extra", "EVENT_ID", "", "a b"]))] = draw(weird_text)
    return record


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# ---------------------------------------------------------------------------------- files


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["record"] * 8 + ["non_object", "not_json", "bad_utf8", "blank", "deep"]))
        if kind == "record":
            lines.append(json.dumps(draw(records(FILES))).encode())
        elif kind == "non_object":
            value = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers())))
            lines.append(json.dumps(value).encode())
        elif kind == "not_json":
            lines.append(draw(st.sampled_from([b"{", b"{'a': 1}", b"NaN NaN", b"}{", b'{"event_id": }'])))
        elif kind == "bad_utf8":
            lines.append(
                b'{"event_id": "' + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + b'"}'
            )
        elif kind == "deep":
            lines.append(deep(draw(st.sampled_from([50, 5_000]))))
        else:
            lines.append(b"   ")
    separator = draw(st.sampled_from([b"\n", b"\r\n"]))
    return separator.join(lines)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    names = FILES.column_names
    header = draw(st.lists(st.sampled_from([*names, "extra"]), min_size=0, max_size=9))
    if draw(st.integers(0, 3)) > 0:  # usually a complete header, in some order
        header = draw(st.permutations(names)) + header[:1]
    rows = []
    for _ in range(draw(st.integers(0, 10))):
        record = draw(records(FILES))
        row = [_csv_cell(record.get(h)) for h in header]
        shape = draw(st.sampled_from(["ok"] * 6 + ["short", "long", "huge"]))
        if shape == "short":
            row = row[:-1]
        elif shape == "long":
            row = [*row, "surplus"]
        elif shape == "huge" and row:
            row[0] = "h" * HUGE
        rows.append([cell.replace("\x00", "") for cell in row])  # csv.writer cannot write NUL
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16", "utf-8-sig"]))
    return text.encode(encoding, errors="replace") if encoding != "utf-8" else text.encode("utf-8", "replace")


@st.composite
def landing_files(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    files = []
    for index in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["jsonl"] * 4 + ["csv"] * 3 + ["empty", "unsupported"]))
        if kind == "jsonl":
            name, data = (
                f"{index}-drop.{draw(st.sampled_from(['jsonl', 'json', 'ndjson']))}",
                draw(jsonl_file()),
            )
        elif kind == "csv":
            name, data = f"{index}-export.csv", draw(csv_file())
        elif kind == "empty":
            name, data = f"{index}-empty.{draw(st.sampled_from(['jsonl', 'csv']))}", b""
        else:
            name, data = f"{index}-notes.{draw(st.sampled_from(['txt', 'parquet', 'gz']))}", b"PAR1\x00\x01"
        files.append((name, data))
    return files


# ---------------------------------------------------------------------------------- checks


def check_published(lake: Lake, contract: SourceContract, result: IngestResult) -> None:
    """Counts add up and what landed satisfies the contract."""
    assert result.rows_read == result.rows_landed + result.rows_quarantined
    raw = lake.url(result.raw_key).replace("'", "''")
    con = duckdb.connect()
    try:
        non_null = " AND ".join(f'"{c.name}" IS NOT NULL' for c in contract.columns if not c.nullable)
        key = ", ".join(f'"{k}"' for k in contract.key)
        partition = contract.partition_column
        in_day = f"AND CAST(\"{partition}\" AS DATE) = DATE '{DAY}'" if partition else ""
        rows, valid, keys = con.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE {non_null} {in_day}), count(DISTINCT ({key}))
                FROM read_parquet('{raw}', hive_partitioning = false)"""
        ).fetchone()  # type: ignore[misc]
        columns = [
            r[0]
            for r in con.execute(
                f"DESCRIBE SELECT * FROM read_parquet('{raw}', hive_partitioning = false)"
            ).fetchall()
        ]
    finally:
        con.close()
    assert rows == result.rows_landed
    assert valid == rows and keys == rows, "a landed row breaks the contract"
    assert columns == contract.column_names
    q_key = quarantine_key(contract.name, DAY)
    if result.rows_quarantined:
        lines = lake.get_bytes(q_key).splitlines()
        assert len(lines) == result.rows_quarantined
        for line in lines:
            entry = json.loads(line)
            assert entry["reason"] and entry["source"]
    else:
        assert not lake.exists(q_key)


def check_violation(exc: ContractViolation, contract: SourceContract, where_prefix: str) -> None:
    message = str(exc)
    assert exc.source == contract.name and repr(contract.name) in message
    assert exc.column in contract.column_names and repr(exc.column) in message
    assert exc.where.startswith(where_prefix) and exc.where in message, message


def reset_dir(root: Path) -> Lake:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return Lake(str(root))


def landing_outcome(lake: Lake, files: list[tuple[str, bytes]]) -> None:
    for name, data in files:
        lake.put_bytes(data, f"landing/web_events/{DAY}/{name}")
    try:
        result = ingest_files(FILES, DAY, lake)
    except ContractViolation as exc:
        check_violation(exc, FILES, f"landing/web_events/{DAY}/")
        assert not lake.exists(f"raw/web_events/ds={DAY}/data.parquet")
        return
    check_published(lake, FILES, result)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@fuzz_settings(400)
@given(files=landing_files())
def test_landing_files_are_refused_clearly_or_fully_accounted(
    fuzz_root: Path, files: list[tuple[str, bytes]]
) -> None:
    landing_outcome(reset_dir(fuzz_root / "lake"), files)


@pytest.mark.slow
@slow_settings(5_000)
@given(files=landing_files())
def test_landing_files_many_random_examples(fuzz_root: Path, files: list[tuple[str, bytes]]) -> None:
    landing_outcome(reset_dir(fuzz_root / "lake"), files)


# ---------------------------------------------------------------------------------- regressions


GOOD_EVENT = {
    "event_id": "e0",
    "event_ts": f"{DAY} 10:00:00",
    "session_id": "s",
    "customer_id": 1,
    "event_type": "page_view",
    "page": "/",
    "ip_address": "10.0.0.1",
}


def lines_with(bad: bytes, good: int = 3) -> bytes:
    rows = [json.dumps({**GOOD_EVENT, "event_id": f"e{i}"}).encode() for i in range(good)]
    return b"\n".join([*rows, bad])


@pytest.mark.parametrize(
    ("case", "name", "data"),
    [
        ("deeply nested JSON line", "deep.jsonl", lines_with(deep(5_000))),
        ("unpaired surrogate escape", "surrogate.jsonl", lines_with(b'{"event_id": "\\ud800", "x": 1}')),
        (
            "CSV field over the csv module's limit",
            "huge.csv",
            (
                "event_id,event_ts,session_id,event_type\n"
                f"e1,{DAY} 10:00:00,s,page_view\n"
                f"e2,{DAY} 10:00:00,{'s' * HUGE},page_view\n"
            ).encode(),
        ),
    ],
)
def test_one_bad_record_is_quarantined_not_a_crash(tmp_path: Path, case: str, name: str, data: bytes) -> None:
    """Each of these crashed ingestion with a non-contract exception when found by the fuzzer."""
    lake = reset_dir(tmp_path / "lake")
    lake.put_bytes(data, f"landing/web_events/{DAY}/{name}")
    result = ingest_files(FILES, DAY, lake)
    check_published(lake, FILES, result)
    assert result.rows_quarantined == 1, (case, result.reasons)


def test_a_record_that_omits_a_key_is_quarantined_like_a_null(tmp_path: Path) -> None:
    """A file whose other records carry ``session_id``: one record without it is a bad row.

    ``check_columns_present`` says a column is missing when no record *of a file* mentions it,
    but it groups by ``file:line``, so one record without the key fails the whole partition.
    """
    lake = reset_dir(tmp_path / "lake")
    omitted = {k: v for k, v in GOOD_EVENT.items() if k != "session_id"} | {"event_id": "omits"}
    lake.put_bytes(lines_with(json.dumps(omitted).encode(), good=10), f"landing/web_events/{DAY}/a.jsonl")
    result = ingest_files(FILES, DAY, lake)
    check_published(lake, FILES, result)
    assert (result.rows_landed, result.rows_quarantined) == (10, 1)
    assert result.reasons == {"session_id is missing": 1}


def test_a_huge_csv_field_leaves_the_process_wide_field_limit_alone(tmp_path: Path) -> None:
    """``csv.field_size_limit`` is global: ingestion must not raise it for every other csv user."""
    lake = reset_dir(tmp_path / "lake")
    text = f"event_id,event_ts,session_id,event_type\ne1,{DAY} 10:00:00,{'s' * HUGE},page_view\n"
    lake.put_bytes(text.encode(), f"landing/web_events/{DAY}/huge.csv")
    before = csv.field_size_limit(131_072)  # the csv module's default, whatever ran before
    try:
        result = ingest_files(FILES, DAY, lake)
        assert csv.field_size_limit() == 131_072
    finally:
        csv.field_size_limit(before)
    check_published(lake, FILES, result)
    assert (result.rows_landed, result.rows_quarantined) == (0, 1)


def test_a_csv_row_the_csv_module_refuses_costs_only_that_row(tmp_path: Path) -> None:
    """A quoted field over the csv limit spanning lines 3-4: that row is quarantined with its line
    number and the rows after it still land (the reader does not lose its place in the file)."""
    lake = reset_dir(tmp_path / "lake")
    half = "s" * (HUGE // 2)
    lines = [
        "event_id,event_ts,session_id,event_type",
        f"e1,{DAY} 10:00:00,s,page_view",
        f'e2,{DAY} 10:00:00,"{half}\n{half}",page_view',
        f"e3,{DAY} 10:00:00,s,page_view",
        f'e4,{DAY} 10:00:00,"two\nlines",page_view',
        f"e5,{DAY} 10:00:00,s,checkout",
    ]
    lake.put_bytes("\r\n".join(lines).encode(), f"landing/web_events/{DAY}/bad.csv")
    result = ingest_files(FILES, DAY, lake)
    check_published(lake, FILES, result)
    assert (result.rows_read, result.rows_landed, result.rows_quarantined) == (5, 4, 1)
    [entry] = [json.loads(line) for line in lake.get_bytes(quarantine_key("web_events", DAY)).splitlines()]
    assert entry["source"] == f"landing/web_events/{DAY}/bad.csv:3", entry["source"]
    assert entry["reason"].startswith("row is not valid CSV (field larger than field limit")
    con = duckdb.connect()
    landed = con.execute(
        f"SELECT list(event_id ORDER BY event_id), max(length(session_id)) "
        f"FROM read_parquet('{lake.url(raw_key('web_events', DAY))}')"
    ).fetchone()
    con.close()
    assert landed == (["e1", "e3", "e4", "e5"], 9)


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheet exports start with a UTF-8 BOM; it must not turn the first header into another name."""
    lake = reset_dir(tmp_path / "lake")
    text = "event_id,event_ts,session_id,event_type\n" + f"e1,{DAY} 10:00:00,s,page_view\n"
    lake.put_bytes(text.encode("utf-8-sig"), f"landing/web_events/{DAY}/bom.csv")
    result = ingest_files(FILES, DAY, lake)
    check_published(lake, FILES, result)
    assert result.rows_landed == 1


# ---------------------------------------------------------------------------------- HTTP


class _Payloads(BaseHTTPRequestHandler):
    """Serves ``server.pages[page] = (status, body)`` for ``/v1/rates?date=…&page=N``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        query = parse_qs(urlparse(self.path).query)
        page = int(query.get("page", ["1"])[0])
        status, body = self.server.pages.get(page, (404, b'{"error": "no such page"}'))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def payload_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Payloads)
    server.pages = {}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@st.composite
def page_body(draw: st.DrawFn, page: int, last: int) -> tuple[int, bytes]:
    kind = draw(
        st.sampled_from(
            ["good"] * 6 + ["non_object", "no_data", "not_json", "bad_utf8", "empty", "deep", "404"]
        )
    )
    if kind == "404":
        return 404, b'{"error": "gone"}'
    if kind == "not_json":
        return 200, b"<html>upstream proxy error</html>"
    if kind == "bad_utf8":
        return 200, b'{"data": ["\xff\xfe"]}'
    if kind == "empty":
        return 200, b""
    if kind == "deep":
        return 200, deep(5_000)
    if kind == "non_object":
        value = draw(
            st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=5))
        )
        return 200, json.dumps(value).encode()
    if kind == "no_data":
        value = draw(st.sampled_from([{}, {"data": None}, {"data": {"a": 1}}, {"data": "rows"}]))
        return 200, json.dumps(value).encode()
    data: list[Any] = [
        draw(st.one_of(records(HTTP), st.none(), st.integers(), st.text(max_size=4)))
        for _ in range(draw(st.integers(0, 8)))
    ]
    payload: dict[str, Any] = {"data": data}
    if page < last:
        payload["next_page"] = draw(st.sampled_from([page + 1] * 4 + [page, str(page + 1), True, -1, None]))
    return 200, json.dumps(payload).encode()


@st.composite
def payload_pages(draw: st.DrawFn) -> dict[int, tuple[int, bytes]]:
    last = draw(st.integers(1, 3))
    return {page: draw(page_body(page, last)) for page in range(1, last + 1)}


def http_outcome(lake: Lake, server: ThreadingHTTPServer, pages: dict[int, tuple[int, bytes]]) -> None:
    server.pages = pages  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1)
    except ContractViolation as exc:
        check_violation(exc, HTTP, f"{base}/v1/rates?")
        assert not lake.exists(f"raw/fx_rates/ds={DAY}/data.parquet")
        return
    except HttpSourceError as exc:
        assert f"{base}/v1/rates?" in str(exc)
        assert not lake.exists(f"raw/fx_rates/ds={DAY}/data.parquet")
        return
    check_published(lake, HTTP, result)


@fuzz_settings(250)
@given(pages=payload_pages())
def test_api_payloads_are_refused_clearly_or_fully_accounted(
    fuzz_root: Path, payload_server: ThreadingHTTPServer, pages: dict[int, tuple[int, bytes]]
) -> None:
    http_outcome(reset_dir(fuzz_root / "http-lake"), payload_server, pages)


@pytest.mark.slow
@slow_settings(3_000)
@given(pages=payload_pages())
def test_api_payloads_many_random_examples(
    fuzz_root: Path, payload_server: ThreadingHTTPServer, pages: dict[int, tuple[int, bytes]]
) -> None:
    http_outcome(reset_dir(fuzz_root / "http-lake"), payload_server, pages)


def test_an_api_record_with_a_lone_surrogate_is_quarantined(
    tmp_path: Path, payload_server: ThreadingHTTPServer
) -> None:
    """Found by the slow fuzzer: ``"\\ud800"`` in an API record crashed Arrow (UnicodeEncodeError).

    The file reader checks records for lone surrogates; records of the HTTP reader skip it.
    """
    lake = reset_dir(tmp_path / "lake")
    good = {"rate_date": DAY, "currency": "EUR", "usd_rate": 1.1}
    body = json.dumps({"data": [good, {**good, "currency": "\ud800"}]}).encode()
    payload_server.pages = {1: (200, body)}  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{payload_server.server_address[1]}"
    result = ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1)
    check_published(lake, HTTP, result)
    assert (result.rows_landed, result.rows_quarantined) == (1, 1)


def test_no_backoff_after_the_last_attempt(payload_server: ThreadingHTTPServer) -> None:
    """3 attempts against an API that always answers 503 wait 0.2 + 0.4 s, not 0.2 + 0.4 + 0.8 s."""
    payload_server.pages = {1: (503, b'{"error": "overloaded"}')}  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{payload_server.server_address[1]}/v1/rates?page=1"
    started = time.monotonic()
    with pytest.raises(HttpSourceError, match="after 3 attempts"):
        fetch_json(url, timeout=5, attempts=3, backoff=0.2)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 0.2 + 0.4 + 0.8, elapsed


@pytest.mark.parametrize(
    "body",
    [b"<html>upstream proxy error</html>", b"", b'{"data": ["\xff"]}', deep(5_000)],
    ids=["html", "empty", "bad-utf8", "deep"],
)
def test_a_body_that_is_not_json_is_an_http_source_error(
    tmp_path: Path, payload_server: ThreadingHTTPServer, body: bytes
) -> None:
    """A 200 whose body is not JSON (a proxy's error page) must fail as the API, not as a bug."""
    lake = reset_dir(tmp_path / "lake")
    payload_server.pages = {1: (200, body)}  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{payload_server.server_address[1]}"
    with pytest.raises(HttpSourceError, match="v1/rates"):
        ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1)


def _raw_rows(lake: Lake, contract: SourceContract) -> list[tuple[Any, ...]]:
    raw = lake.url(raw_key(contract.name, DAY)).replace("'", "''")
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT * FROM read_parquet('{raw}', hive_partitioning = false) ORDER BY ALL"
        ).fetchall()


def test_an_api_page_without_its_data_list_fails_and_keeps_the_previous_partition(
    tmp_path: Path, payload_server: ThreadingHTTPServer
) -> None:
    """A 200 page without ``data`` (or with a next_page that is no later page) used to end paging:
    the pages before it replaced a complete partition. Now the partition fails, the old one stays."""
    lake = reset_dir(tmp_path / "lake")
    base = f"http://127.0.0.1:{payload_server.server_address[1]}"
    first = {"data": [{"rate_date": DAY, "currency": "EUR", "usd_rate": 1.1}], "next_page": 2}
    second = {"data": [{"rate_date": DAY, "currency": "GBP", "usd_rate": 1.3}]}
    payload_server.pages = {1: (200, json.dumps(first).encode()), 2: (200, json.dumps(second).encode())}  # type: ignore[attr-defined]
    assert ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1).rows_landed == 2
    complete = _raw_rows(lake, HTTP)
    for broken in (
        {},
        {"data": None},
        {"rows": []},
        {"data": [], "next_page": "3"},
        {"data": [], "next_page": 1},
    ):
        payload_server.pages = {1: (200, json.dumps(first).encode()), 2: (200, json.dumps(broken).encode())}  # type: ignore[attr-defined]
        with pytest.raises(HttpSourceError, match="page=2"):
            ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1)
        assert _raw_rows(lake, HTTP) == complete, broken


def test_api_duplicate_keys_are_judged_on_the_typed_values(
    tmp_path: Path, payload_server: ThreadingHTTPServer
) -> None:
    """'2026-05-04' and '2026-05-04 00:00:00' are one DATE: the second row is a duplicate key."""
    lake = reset_dir(tmp_path / "lake")
    rows = [
        {"rate_date": f"{DAY} 00:00:00", "currency": "EUR", "usd_rate": 1.2},
        {"rate_date": DAY, "currency": "EUR", "usd_rate": 1.1},
        {"rate_date": DAY, "currency": "GBP", "usd_rate": 1.3},
    ]
    payload_server.pages = {1: (200, json.dumps({"data": rows}).encode())}  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{payload_server.server_address[1]}"
    result = ingest_http(HTTP, DAY, lake, base, timeout=5, attempts=1)
    check_published(lake, HTTP, result)
    assert (result.rows_landed, result.rows_quarantined) == (2, 1)
    assert result.reasons == {"duplicate key (rate_date, currency)": 1}
    assert [r[:2] for r in _raw_rows(lake, HTTP)] == [(date(2026, 5, 4), "EUR"), (date(2026, 5, 4), "GBP")]


def test_file_duplicate_keys_are_judged_on_the_typed_values(tmp_path: Path) -> None:
    """A file source keyed by a DATE and a BIGINT: '2026-05-04' / '2026-05-04 00:00:00' and
    '7' / '07' land as one key each, in JSON lines and in CSV alike."""
    from pipelines.shop.sources.contracts import Column

    contract = SourceContract(
        name="daily_totals",
        kind="files",
        description="test source with typed keys",
        key=("day", "store"),
        partition_column="day",
        columns=(Column("day", "DATE", False), Column("store", "BIGINT", False), Column("total", "DOUBLE")),
    )
    lake = reset_dir(tmp_path / "lake")
    lines = [
        {"day": DAY, "store": "7", "total": 1.0},
        {"day": f"{DAY} 00:00:00", "store": "07", "total": 2.0},
    ]
    lake.put_bytes(
        "\n".join(json.dumps(r) for r in lines).encode(), f"{landing_prefix('daily_totals', DAY)}/a.jsonl"
    )
    lake.put_bytes(
        f"day,store,total\n{DAY}T00:00:00,7,3.0\n{DAY},8,4.0\n".encode(),
        f"{landing_prefix('daily_totals', DAY)}/b.csv",
    )
    result = ingest_files(contract, DAY, lake)
    check_published(lake, contract, result)
    assert (result.rows_read, result.rows_landed, result.rows_quarantined) == (4, 2, 2)
    assert result.reasons == {"duplicate key (day, store)": 2}
    assert [r[:2] for r in _raw_rows(lake, contract)] == [(date(2026, 5, 4), 7), (date(2026, 5, 4), 8)]


# ---------------------------------------------------------------------------------- file names

unsafe_names = st.one_of(
    st.sampled_from(
        ["..", ".", "../x.jsonl", "..\\x.jsonl", "a/b.jsonl", "x\x00.jsonl", ".hidden.jsonl", ""]
    ),
    st.tuples(
        st.text(max_size=10), st.sampled_from(["/", "\\", "\x00", "\n", "\x1f"]), st.text(max_size=10)
    ).map("".join),
    st.text(min_size=201, max_size=260),
    st.text(max_size=20).map(lambda s: "." + s),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(name=unsafe_names)
def test_safe_file_name_refuses_every_escaping_name(name: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        safe_file_name(name)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(name=st.text(min_size=1, max_size=200))
def test_an_accepted_file_name_stays_in_its_folder(name: str) -> None:
    try:
        safe_file_name(name)
    except InvalidIdentifierError:
        return
    base = Path("/srv/lake/landing/web_events/2026-05-04")
    assert (base / name).resolve().parent == base
    assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b.jsonl",
        "x\x01y.jsonl",
        "tab\tname.jsonl",
        "back\\slash/x.jsonl",
        "ctl\x1fdir/x.jsonl",
        f"{'d' * 201}/x.jsonl",
        "ok/\x00/x.jsonl",
    ],
)
def test_an_unsafe_landing_object_name_on_s3_is_refused(s3_env: S3Env, name: str) -> None:
    """On S3 any byte string is a key; ingestion refuses names that could escape a folder elsewhere,
    in the file name or in any folder segment below the partition's prefix."""
    lake = Lake(s3_env.uri("lake"), client=s3_env.client())
    lake.put_bytes(json.dumps(GOOD_EVENT).encode(), f"landing/web_events/{DAY}/ok.jsonl")
    key = f"lake/landing/web_events/{DAY}/{name}"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=json.dumps(GOOD_EVENT).encode())
    with pytest.raises(InvalidIdentifierError, match="unsafe file name"):
        ingest_files(FILES, DAY, lake)
    assert not lake.exists(f"raw/web_events/ds={DAY}/data.parquet")


HIDDEN = [".x.jsonl.123.tmp", "_SUCCESS", "_temporary/0/part.jsonl", "sub/.cache/x.jsonl", "..", "../x.jsonl"]


def test_hidden_and_temporary_landing_objects_are_skipped_on_s3_as_locally(
    s3_env: S3Env, tmp_path: Path
) -> None:
    """In-flight temp files and markers are not data: on S3 as in a local folder, listing skips
    every key with a segment starting with ``.`` or ``_`` below the prefix, and ingestion reads
    only the real file."""
    s3 = Lake(s3_env.uri("lake"), client=s3_env.client())
    local = reset_dir(tmp_path / "lake")
    prefix = landing_prefix("web_events", DAY)
    body = json.dumps(GOOD_EVENT).encode()
    for name in HIDDEN:
        s3_env.client().put_object(Bucket=s3_env.bucket, Key=f"lake/{prefix}/{name}", Body=body)
        if ".." not in name.split("/"):
            local.put_bytes(body, f"{prefix}/{name}")
    for lake in (s3, local):
        lake.put_bytes(body, f"{prefix}/ok.jsonl")
        assert [o.key for o in lake.list(prefix)] == [f"{prefix}/ok.jsonl"]
        assert len(list(lake.list(prefix, hidden=True))) > 1
        result = ingest_files(FILES, DAY, lake)
        assert (result.inputs, result.rows_read, result.rows_landed) == ([f"{prefix}/ok.jsonl"], 1, 1)


@pytest.mark.parametrize("source", ["../raw", "a/b", "web events", ""])
def test_every_segment_of_a_lake_path_is_validated(source: str) -> None:
    for build in (landing_prefix, raw_key, quarantine_key):
        with pytest.raises(InvalidIdentifierError, match="source name"):
            build(source, DAY)
