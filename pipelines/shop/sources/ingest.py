"""Validate one partition of one source against its contract and publish it to the raw zone.

The work happens in an in-memory DuckDB (vectorised casts and checks, no per-row Python for
database sources). Every row read ends up either in the raw Parquet file or in the quarantine
file with a reason, and the counts are checked to add up before anything is published.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from dagster_sqlmesh_bridge.identifiers import safe_identifier, safe_partition_key, sql_string
from pipelines.platform.lake import Lake
from pipelines.shop.sources.contracts import SourceContract

MAX_TEXT_LENGTH = 10_000
_TYPE_FAMILY = {
    "BIGINT": "int",
    "INTEGER": "int",
    "HUGEINT": "int",
    "SMALLINT": "int",
    "TINYINT": "int",
    "UBIGINT": "int",
    "UINTEGER": "int",
    "DOUBLE": "float",
    "FLOAT": "float",
    "VARCHAR": "text",
    "DATE": "date",
    "TIMESTAMP": "ts",
    "BOOLEAN": "bool",
}
_COMPATIBLE = {
    "int": {"int", "text"},
    "float": {"float", "int", "text"},
    "text": {"text"},
    "date": {"date", "ts", "text"},
    "ts": {"ts", "date", "text"},
    "bool": {"bool", "text"},
}


class ContractViolation(ValueError):
    """A partition's shape breaks its source contract; nothing of it is published."""

    def __init__(self, source: str, column: str, where: str, problem: str) -> None:
        super().__init__(f"source {source!r}, column {column!r}, in {where}: {problem}")
        self.source, self.column, self.where = source, column, where


@dataclass
class IngestResult:
    source: str
    partition: str
    rows_read: int
    rows_landed: int
    rows_quarantined: int
    raw_key: str
    quarantine_key: str | None
    inputs: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def raw_key(source: str, partition: str) -> str:
    return f"raw/{_partition_path(source, partition)}/data.parquet"


def quarantine_key(source: str, partition: str) -> str:
    return f"quarantine/{_partition_path(source, partition)}/rejected.jsonl"


def _partition_path(source: str, partition: str) -> str:
    """Both segments become object keys and local paths: validate each one."""
    return f"{safe_identifier(source, 'source name')}/ds={safe_partition_key(partition)}"


def records_table(contract: SourceContract, records: Iterable[tuple[str, str | None, object]]) -> pa.Table:
    """Arrow table (all text) from ``(source, parse_error, record)`` triples.

    ``record`` is a parsed dict, or the raw text when it could not be parsed. Values keep their
    JSON spelling so that type checks happen later, in SQL, with one rule for every source.
    """
    names = contract.column_names
    cols: dict[str, list[str | None]] = {n: [] for n in names}
    sources, errors, raws = [], [], []
    for source, error, record in records:
        sources.append(source)
        if error is None and not isinstance(record, dict):
            error = "record is not a JSON object"
        if error is not None:
            errors.append(error)
            raws.append(record if isinstance(record, str) else json.dumps(record, default=str))
            for n in names:
                cols[n].append(None)
            continue
        assert isinstance(record, dict)
        errors.append(None)
        raws.append(None)
        for n in names:
            cols[n].append(_as_text(record.get(n)))
    arrays = {n: pa.array(v, type=pa.string()) for n, v in cols.items()}
    arrays["_source"] = pa.array(sources, type=pa.string())
    arrays["_parse_error"] = pa.array(errors, type=pa.string())
    arrays["_raw"] = pa.array(raws, type=pa.string())
    return pa.table(arrays)


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, default=str)


def present_columns(
    contract: SourceContract, records: list[tuple[str, str | None, object]]
) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Per input file: the contract columns its records mention at all, and its record count."""
    seen: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for source, error, record in records:
        head, _, tail = source.rpartition(":")
        file = head if tail.isdigit() and head else source
        keys = seen.setdefault(file, set())
        if error is None and isinstance(record, dict):
            counts[file] = counts.get(file, 0) + 1
            keys.update(k for k in record if k in contract.column_names)
    return seen, counts


def parse_json_lines(source: str, data: bytes) -> Iterator[tuple[str, str | None, object]]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, f"line is not valid UTF-8 ({exc.reason})", line.decode("utf-8", "replace")
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield where, f"line is not valid JSON ({exc})", text
            continue
        except RecursionError:
            yield where, "line is not valid JSON (nested too deeply)", text[:2000]
            continue
        problem = unencodable_problem(record)
        if problem:
            yield where, problem, text.encode("utf-8", "replace").decode("utf-8")[:2000]
            continue
        yield where, None, record


def unencodable_problem(record: object) -> str | None:
    """JSON may escape lone surrogates (``"\\ud800"``): text no UTF-8 file can hold."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "record holds text that is not valid Unicode (lone surrogate)"
    except (RecursionError, ValueError):
        return "record is nested too deeply"
    return None


# One CSV record as the csv module (default dialect, strict=False) delimits it: quoted fields may
# hold line breaks and ``""``; after a closing quote, text up to the next delimiter is kept.
_CSV_FIELD = r'"[^"]*(?:""[^"]*)*(?:"[^,\r\n]*)?|[^,\r\n"][^,\r\n]*|'
_CSV_RECORD = re.compile(rf"(?:{_CSV_FIELD})(?:,(?:{_CSV_FIELD}))*(?:\r\n|\n|\r|\Z)")


def csv_records(text: str) -> Iterator[tuple[int, str, list[str] | csv.Error]]:
    """``(first line number, record text, fields or the csv.Error)`` for each record of ``text``.

    Records are split before the csv module parses each one alone, so an error (a field over
    ``csv.field_size_limit()``) costs that record only, and the process-wide limit is untouched.
    """
    pos, line = 0, 1
    while pos < len(text):
        match = _CSV_RECORD.match(text, pos)
        assert match is not None and match.end() > pos  # every alternative ends at , \r \n or EOF
        chunk = match.group()
        try:
            row: list[str] | csv.Error = next(csv.reader([chunk]))
        except csv.Error as exc:
            row = exc
        yield line, chunk, row
        pos = match.end()
        line += chunk.count("\n") + chunk.count("\r") - chunk.count("\r\n")


def parse_csv(source: str, data: bytes) -> Iterator[tuple[str, str | None, object]]:
    try:
        text = data.decode("utf-8-sig")  # tolerate a byte order mark
    except UnicodeDecodeError as exc:
        yield source, f"file is not valid UTF-8 ({exc.reason})", data.decode("utf-8", "replace")[:2000]
        return
    records = csv_records(text)
    _, _, header = next(records, (0, "", []))
    for number, chunk, row in records:
        where = f"{source}:{number}"
        if isinstance(header, csv.Error):
            yield where, f"the CSV header is not valid CSV ({header})", chunk[:2000]
        elif isinstance(row, csv.Error):
            yield where, f"row is not valid CSV ({row})", chunk[:2000]
        elif len(row) != len(header):
            yield where, f"row has {len(row)} fields, header has {len(header)}", ",".join(row)[:2000]
        else:
            yield where, None, {k: (v if v != "" else None) for k, v in zip(header, row, strict=True)}


class PartitionWriter:
    """Checks and publishes one partition; call :meth:`publish` once the input is loaded."""

    def __init__(self, contract: SourceContract, partition: str, lake: Lake) -> None:
        self.contract = contract
        self.partition = safe_partition_key(partition)
        self.lake = lake
        self.con = duckdb.connect()
        self.con.execute("SET threads TO 2")
        self.typed_input = False
        # typed input columns already of the contract's exact type: their cast cannot fail
        self.exact_columns: set[str] = set()

    def load_arrow(self, table: pa.Table) -> None:
        self.con.register("incoming_arrow", table)
        self.con.execute("CREATE TEMP TABLE incoming AS SELECT * FROM incoming_arrow")
        self.con.unregister("incoming_arrow")

    def load_query(self, sql: str, where: str, params: list[object] | None = None) -> None:
        """Load typed rows from a query (a database source) after checking its column types."""
        actual = {r[0]: r[1] for r in self.con.execute(f"DESCRIBE {sql}", params or []).fetchall()}
        for col in self.contract.columns:
            if col.name not in actual:
                raise ContractViolation(self.contract.name, col.name, where, "column is missing")
            family = _TYPE_FAMILY.get(actual[col.name].split("(")[0], "other")
            if family not in _COMPATIBLE[_TYPE_FAMILY[col.type]]:
                raise ContractViolation(
                    self.contract.name,
                    col.name,
                    where,
                    f"has type {actual[col.name]}, the contract says {col.type}",
                )
        select = ", ".join(f'"{c.name}"' for c in self.contract.columns)
        # the constant bookkeeping columns live in a view: stored per row they cost ~10%
        self.con.execute(f"CREATE TEMP TABLE incoming_rows AS SELECT {select} FROM ({sql})", params or [])
        self.con.execute(
            f"CREATE TEMP VIEW incoming AS SELECT *, {sql_string(where)}::VARCHAR AS _source, "
            "NULL::VARCHAR AS _parse_error, NULL::VARCHAR AS _raw FROM incoming_rows"
        )
        self.typed_input = True
        self.exact_columns = {c.name for c in self.contract.columns if actual[c.name] == c.type}

    def check_columns_present(self, seen: dict[str, set[str]], records: dict[str, int] | None = None) -> None:
        """A column that no record of a file mentions is a missing column, not a null.

        With fewer than 5 records in a file the evidence is too thin: rows lacking a required
        key are quarantined as missing values instead.
        """
        for source, keys in seen.items():
            if not keys or (records is not None and records.get(source, 0) < 5):
                continue
            for col in self.contract.columns:
                if col.name not in keys and not col.nullable:
                    raise ContractViolation(self.contract.name, col.name, source, "column is missing")

    def _rules(self) -> list[tuple[str, str]]:
        """(condition a valid row meets, reason given when it does not), per contract rule."""
        rules: list[tuple[str, str]] = []
        for col in self.contract.columns:
            q = f'"{col.name}"'
            if not col.nullable:
                rules.append((f"{q} IS NOT NULL", f"{col.name} is missing"))
            if col.name not in self.exact_columns:
                rules.append(
                    (
                        f"({q} IS NULL OR TRY_CAST({q} AS {col.type}) IS NOT NULL)",
                        f"{col.name} is not a valid {col.type}",
                    )
                )
            if col.type == "VARCHAR":
                rules.append(
                    (
                        f"({q} IS NULL OR length({q}::VARCHAR) <= {MAX_TEXT_LENGTH})",
                        f"{col.name} is longer than {MAX_TEXT_LENGTH} characters",
                    )
                )
        if self.contract.partition_column:
            day = date.fromisoformat(self.partition)
            next_day = day + timedelta(days=1)
            q = f'TRY_CAST("{self.contract.partition_column}" AS TIMESTAMP)'
            rules.append(
                (
                    f"NOT coalesce({q} < TIMESTAMP '{day}' OR {q} >= TIMESTAMP '{next_day}', false)",
                    f"{self.contract.partition_column} is outside partition {day}",
                )
            )
        return rules

    def _valid_sql(self, rules: list[tuple[str, str]] | None = None) -> str:
        """True for a row that meets every rule (a plain vectorized filter)."""
        conditions = ["_parse_error IS NULL", *(cond for cond, _ in rules or self._rules())]
        return f"coalesce({' AND '.join(conditions)}, false)"

    def _reason_sql(self) -> str:
        """Every broken rule of a row, '' for a valid row.

        The reasons text is only built for rows that break a rule: the conjunction is a cheap
        vectorized test, the string concatenation cost most of the ingestion time when done for
        every row.
        """
        rules = self._rules()
        valid = self._valid_sql(rules)
        reasons = ", ".join(
            [
                "_parse_error",
                *(f"CASE WHEN NOT coalesce({cond}, false) THEN '{why}' END" for cond, why in rules),
            ]
        )
        return f"CASE WHEN {valid} THEN '' ELSE concat_ws('; ', {reasons}) END"

    def _check_types_usable(self) -> None:
        """A column whose every value in a file fails to cast has the wrong type: fail the partition.

        Typed database input was already checked against the contract by its column types.
        """
        if self.typed_input:
            return
        counts = ", ".join(
            f'count("{c.name}") AS n{i}, count(TRY_CAST("{c.name}" AS {c.type})) AS ok{i}'
            for i, c in enumerate(self.contract.columns)
        )
        rows = self.con.execute(
            f"SELECT regexp_replace(_source, ':[0-9]+$', '') AS file, {counts} "
            "FROM incoming WHERE _parse_error IS NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
        for row in rows:
            for i, col in enumerate(self.contract.columns):
                nonnull, castable = row[1 + 2 * i], row[2 + 2 * i]
                if nonnull >= 5 and castable == 0:
                    raise ContractViolation(
                        self.contract.name, col.name, row[0], f"no value is a valid {col.type}"
                    )

    def publish(self, inputs: list[str]) -> IngestResult:
        self._check_types_usable()
        # Duplicates are judged on the values that land (the contract's types), not on the input
        # text: '2026-04-06' and '2026-04-06 00:00:00' are one DATE.
        types = {c.name: c.type for c in self.contract.columns}
        key_cols = ", ".join(
            f'"{k}"' if k in self.exact_columns else f'TRY_CAST("{k}" AS {types[k]})'
            for k in self.contract.key
        )
        out_order = ", ".join(f'"{k}"' for k in self.contract.key)  # the typed output columns
        # Sources usually return rows in key order already (a primary key scan). A strictly
        # increasing key has no duplicates and needs no sort: one streaming pass decides both.
        key = key_cols if len(self.contract.key) == 1 else f"row({key_cols})"
        in_key_order = self.con.execute(
            f"SELECT coalesce(bool_and(coalesce(prev < k, false)), true) FROM "
            f"(SELECT {key} AS k, lag({key}) OVER () AS prev FROM incoming) WHERE prev IS NOT NULL"
        ).fetchone()[0]
        duplicated = (
            0
            if in_key_order
            else self.con.execute(
                f"SELECT count(*) FROM (SELECT {key_cols} FROM incoming "
                f"GROUP BY {key_cols} HAVING count(*) > 1)"
            ).fetchone()[0]
        )
        # The window that names duplicates sorts every row: only paid for when there are some.
        # Then ``checked`` must be a table: which of two equal keys wins is decided once. Without
        # duplicates every verdict is a pure function of its row and a view is evaluated by the
        # one COPY that needs it (and by the quarantine's, when some row broke a rule).
        duplicate_rule = (
            f"""WHEN row_number() OVER (PARTITION BY {key_cols} ORDER BY _source) > 1
                THEN 'duplicate key ({", ".join(self.contract.key)})' """
            if duplicated
            else ""
        )
        self.con.execute(
            f"""CREATE TEMP {"TABLE" if duplicated else "VIEW"} checked AS
            SELECT *, CASE WHEN reason <> '' THEN reason {duplicate_rule}ELSE '' END AS _reason
            FROM (SELECT *, {self._reason_sql()} AS reason FROM incoming)"""
        )
        read = self.con.execute("SELECT count(*) FROM incoming").fetchone()[0]
        cols = ", ".join(
            f'"{c.name}"'
            if c.name in self.exact_columns
            else f'TRY_CAST("{c.name}" AS {c.type}) AS "{c.name}"'
            for c in self.contract.columns
        )
        out_key = raw_key(self.contract.name, self.partition)
        q_key = quarantine_key(self.contract.name, self.partition)
        with tempfile.TemporaryDirectory() as tmp:
            data_file = Path(tmp) / "data.parquet"
            # without duplicates a row's verdict is the rules' filter: no reasons text per row
            rows = "checked WHERE _reason = ''" if duplicated else f"incoming WHERE {self._valid_sql()}"
            landed = self.con.execute(
                f"COPY (SELECT {cols} FROM {rows}{'' if in_key_order else ' ORDER BY ' + out_order}) "
                f"TO '{data_file}' (FORMAT parquet, COMPRESSION zstd)"
            ).fetchone()[0]
            reasons = (
                dict(
                    self.con.execute(
                        "SELECT split_part(_reason, '; ', 1), count(*) FROM checked WHERE _reason <> '' "
                        "GROUP BY 1 ORDER BY 2 DESC LIMIT 20"
                    ).fetchall()
                )
                if landed < read
                else {}
            )
            written = self.con.execute(f"SELECT count(*) FROM read_parquet('{data_file}')").fetchone()[0]
            quarantined = read - landed
            if written != landed:
                raise RuntimeError(f"{self.contract.name}: wrote {written} rows, expected {landed}")
            if quarantined:
                q_file = Path(tmp) / "rejected.jsonl"
                raw_cols = ", ".join(f'"{c.name}"' for c in self.contract.columns)
                self.con.execute(
                    f"""COPY (SELECT _source AS source, _reason AS reason,
                              coalesce(_raw, to_json(struct_pack({raw_cols}))::VARCHAR) AS record
                       FROM checked WHERE _reason <> '' ORDER BY _source)
                    TO '{q_file}' (FORMAT json)"""
                )
            # old quarantine out first, new one in last: a crash in between never leaves a
            # quarantine file beside data it does not describe (or with no data at all)
            if self.lake.exists(q_key):
                self.lake.delete(q_key)
            self.lake.put_file(data_file, out_key)
            if quarantined:
                self.lake.put_file(q_file, q_key)
        self.con.close()
        return IngestResult(
            source=self.contract.name,
            partition=self.partition,
            rows_read=read,
            rows_landed=landed,
            rows_quarantined=read - landed,
            raw_key=out_key,
            quarantine_key=q_key if read - landed else None,
            inputs=inputs,
            reasons=reasons,
        )
