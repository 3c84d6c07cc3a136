"""Readers for the three kinds of source system: a relational database, file drops, an HTTP API."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import duckdb

from dagster_sqlmesh_bridge.identifiers import safe_file_name, safe_identifier, safe_partition_key
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.lake import Lake
from pipelines.shop.sources import demo
from pipelines.shop.sources.contracts import SourceContract
from pipelines.shop.sources.ingest import (
    ContractViolation,
    IngestResult,
    PartitionWriter,
    parse_csv,
    parse_json_lines,
    present_columns,
    records_table,
    unencodable_problem,
)


def attach_shop_database(
    con: duckdb.DuckDBPyConnection,
    *,
    sqlite_path: str | None = None,
    postgres: dict[str, str] | None = None,
    read_only: bool = True,
) -> str:
    """Attach the shop database as ``shop``; returns a description safe to log (no password)."""
    install_extensions()
    mode = ", READ_ONLY" if read_only else ""
    if postgres:
        con.execute("LOAD postgres_scanner")
        fields = ", ".join(
            f"{k.upper()} '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in postgres.items() if v
        )
        con.execute(f"CREATE OR REPLACE TEMPORARY SECRET shop_db (TYPE postgres, {fields})")
        con.execute(f"ATTACH '' AS shop (TYPE postgres, SECRET shop_db{mode})")
        return f"postgres://{postgres.get('host')}:{postgres.get('port')}/{postgres.get('database')}"
    if not sqlite_path:
        raise ValueError("the shop database needs a sqlite path or postgres settings")
    con.execute("LOAD sqlite_scanner")
    Path(sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    quoted = sqlite_path.replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS shop (TYPE sqlite{mode})")
    return f"sqlite://{sqlite_path}"


def database_query(contract: SourceContract, partition: str) -> tuple[str, list[object]]:
    day = date.fromisoformat(safe_partition_key(partition))
    base = f"SELECT * FROM shop.{contract.name}"
    if contract.name == "customers":
        return f"{base} WHERE CAST(signup_date AS DATE) <= ?::DATE", [day.isoformat()]
    if contract.partition_column:
        col = contract.partition_column
        return (
            f'{base} WHERE CAST("{col}" AS TIMESTAMP) >= ?::TIMESTAMP '
            f'AND CAST("{col}" AS TIMESTAMP) < ?::TIMESTAMP',
            [day.isoformat(), (day + timedelta(days=1)).isoformat()],
        )
    return base, []


def ingest_database(
    contract: SourceContract, partition: str, lake: Lake, attach: dict[str, object]
) -> IngestResult:
    safe_partition_key(partition)
    writer = PartitionWriter(contract, partition, lake)
    where = attach_shop_database(writer.con, **attach)  # type: ignore[arg-type]
    sql, params = database_query(contract, partition)
    writer.load_query(sql, f"{where} table {contract.name}", params)
    return writer.publish([f"{where}/{contract.name}"])


def landing_prefix(source: str, partition: str) -> str:
    return f"landing/{safe_identifier(source, 'source name')}/{safe_partition_key(partition)}"


def ingest_files(contract: SourceContract, partition: str, lake: Lake) -> IngestResult:
    """All JSON lines / CSV files dropped for ``partition`` become one raw partition."""
    safe_partition_key(partition)
    records: list[tuple[str, str | None, object]] = []
    inputs: list[str] = []
    prefix = landing_prefix(contract.name, partition)
    for obj in lake.list(prefix):
        # on S3 a key is any string: every segment below the prefix must be a safe name
        segments = obj.key.removeprefix(f"{prefix}/").split("/")
        for segment in segments:
            safe_file_name(segment)
        name = segments[-1]
        data = lake.get_bytes(obj.key)
        inputs.append(obj.key)
        if name.endswith((".jsonl", ".json", ".ndjson")):
            records.extend(parse_json_lines(obj.key, data))
        elif name.endswith(".csv"):
            _check_csv_header(contract, obj.key, data)
            records.extend(parse_csv(obj.key, data))
        else:
            records.append((obj.key, "unsupported file type (expected .jsonl or .csv)", name))
    writer = PartitionWriter(contract, partition, lake)
    writer.check_columns_present(*present_columns(contract, records))
    writer.load_arrow(records_table(contract, records))
    return writer.publish(inputs)


def _check_csv_header(contract: SourceContract, key: str, data: bytes) -> None:
    """A CSV header names its columns: a required one missing from it fails the partition."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig", "replace").strip("\r")
    try:
        header = {name.strip() for name in next(csv.reader(io.StringIO(first, newline="")), [])}
    except csv.Error:  # an unreadable header: the row parser quarantines the file's rows
        return
    if not header:
        return
    for col in contract.columns:
        if not col.nullable and col.name not in header:
            raise ContractViolation(contract.name, col.name, key, "column is missing from the CSV header")


class HttpSourceError(RuntimeError):
    """The HTTP API kept failing after every retry."""


def fetch_json(url: str, timeout: float, attempts: int, backoff: float = 0.5) -> object:
    """GET ``url`` as JSON, retrying 5xx, 429 and connection errors with exponential backoff."""
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
                body = resp.read()
            try:
                return json.loads(body.decode("utf-8"))
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise HttpSourceError(
                    f"GET {url} answered {len(body)} bytes that are not a JSON document: {exc}"
                ) from exc
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise HttpSourceError(f"GET {url} failed with HTTP {exc.code}") from exc
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
        if attempt + 1 < attempts:  # no wait after the last attempt: nothing follows it
            time.sleep(backoff * 2**attempt)
    raise HttpSourceError(f"GET {url} failed after {attempts} attempts: {last}")


def ingest_http(
    contract: SourceContract, partition: str, lake: Lake, base_url: str, timeout: float, attempts: int
) -> IngestResult:
    safe_partition_key(partition)  # before it becomes part of a URL
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"rates API URL must be http(s), got {base_url!r}")
    records: list[tuple[str, str | None, object]] = []
    page: int | None = 1
    inputs = []
    while page is not None:
        url = f"{base_url.rstrip('/')}/v1/rates?{urlencode({'date': partition, 'page': page})}"
        payload = fetch_json(url, timeout, attempts)
        inputs.append(url)
        # a malformed page fails the partition: publishing the pages before it would replace a
        # complete partition by a partial one
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            shown = json.dumps(payload)[:200]
            raise HttpSourceError(f"GET {url} answered a page with no 'data' list: {shown}")
        records.extend(_checked_record(f"{url}#{i}", row) for i, row in enumerate(payload["data"]))
        nxt = payload.get("next_page")
        if nxt is not None and (not isinstance(nxt, int) or isinstance(nxt, bool) or nxt <= page):
            raise HttpSourceError(f"GET {url} answered next_page {nxt!r}, not a later page number")
        page = nxt
    writer = PartitionWriter(contract, partition, lake)
    writer.check_columns_present(*present_columns(contract, records))
    writer.load_arrow(records_table(contract, records))
    return writer.publish(inputs)


def _checked_record(where: str, record: object) -> tuple[str, str | None, object]:
    """API records can carry lone surrogates too (``"\\ud800"``): quarantine them, as files do."""
    problem = unencodable_problem(record)
    if problem is None:
        return where, None, record
    try:
        raw = json.dumps(record)[:2000]  # ASCII escapes: any text survives
    except (RecursionError, ValueError):
        raw = "(record too deeply nested to show)"
    return where, problem, raw


class _RatesHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            day = date.fromisoformat(query["date"][0])
            body = demo.fx_payload(day)
            status = 200
        except (KeyError, ValueError):
            body, status = b'{"error": "date=YYYY-MM-DD is required"}', 400
        if url.path != "/v1/rates":
            body, status = b'{"error": "not found"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def start_demo_rates_api(port: int = 0) -> ThreadingHTTPServer:
    """Serve the demo rates API on 127.0.0.1 in a daemon thread (local default and tests)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _RatesHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="demo-rates-api").start()
    return server


_embedded: ThreadingHTTPServer | None = None
_embedded_lock = threading.Lock()


def embedded_rates_api_url() -> str:
    """The demo API's URL (started on first use); refused in prod, where rates must be real."""
    global _embedded
    if os.environ.get("PIPELINES_ENV", "local").strip() == "prod":
        raise RuntimeError("the demo rates API is for local use only: set PIPELINES_RATES_API_URL")
    with _embedded_lock:
        if _embedded is None:
            _embedded = start_demo_rates_api()
        host, port = _embedded.server_address[:2]
        return f"http://{host}:{port}"
