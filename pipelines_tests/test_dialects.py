"""Every bundled model renders to Athena and Trino SQL that those engines accept.

We cannot run either engine here, and re-parsing the SQL with sqlglot (the library that generated
it) proves nothing. So the rendered SQL is checked against rules taken by hand from the engines'
documentation: Trino's function list and grammar (https://trino.io/docs/current/functions/list.html,
https://trino.io/docs/current/sql/select.html) and Athena engine version 3, which is Trino-based
(https://docs.aws.amazon.com/athena/latest/ug/functions-env3.html); and one model's full SQL per
engine, read against those pages, is compared verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlglot.errors import ErrorLevel

from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT

ENGINES = {"athena": "awsdatacatalog", "trino": "iceberg"}  # engine -> the catalog the gateway uses

# Functions from Trino's documented list that the bundled models may use (Athena v3 has them all).
# A model that needs another one adds it here after checking it on that page.
DOCUMENTED_FUNCTIONS = {
    "abs", "arbitrary", "avg", "cast", "coalesce", "count", "date_add", "date_diff", "date_trunc",
    "greatest", "least", "lower", "max", "min", "nullif", "round", "sha256", "sum", "to_hex",
    "to_utf8", "trim", "upper",
}  # fmt: skip
# Words that stand before "(" in SQL without being function calls.
SYNTAX = {"as", "and", "exists", "filter", "in", "not", "or", "over", "values"}
# DuckDB spellings with no meaning (or another one) on Trino.
DUCKDB_ONLY = ("::", " ILIKE ", "STRFTIME(", "ANY_VALUE(", "LIST_", "EPOCH(", "QUALIFY", "ORDER BY ALL")

# staging.stg_customers as each engine must receive it (checked by hand against the pages above:
# CAST(.. AS BIGINT/VARCHAR/DATE), to_utf8 -> varbinary -> sha256 -> to_hex, || on varchar,
# a scalar subquery with ORDER BY .. LIMIT 1, double-quoted identifiers, catalog.schema.table).
STG_CUSTOMERS = """
SELECT
  CAST("customers"."customer_id" AS BIGINT) AS "customer_id",
  LOWER(TO_HEX(SHA256(TO_UTF8('local-development-salt' || LOWER(CAST("customers"."email" AS VARCHAR))))))
    AS "email_hash",
  CAST("customers"."country" AS VARCHAR) AS "country",
  CAST("customers"."segment" AS VARCHAR) AS "segment",
  CAST("customers"."signup_date" AS DATE) AS "signup_date"
FROM "{catalog}"."raw"."customers" AS "customers"
WHERE "customers"."ds" = (
  SELECT "customers"."ds" AS "ds" FROM "{catalog}"."raw"."customers" AS "customers"
  ORDER BY "ds" DESC LIMIT 1
)
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """model -> {engine: SQL}, rendered by SQLMesh with each gateway for one day."""
    from sqlmesh import Context

    tmp = tmp_path_factory.mktemp("dialects")
    out: dict[str, dict[str, str]] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIPELINES_DATA_DIR", str(tmp / "data"))
        env.setenv("PIPELINES_LAKE_URI", str(tmp / "lake"))
        env.delenv("PIPELINES_PII_SALT", raising=False)
        for engine in ENGINES:
            ctx = Context(paths=str(BUNDLED_SQLMESH_PROJECT), gateway=engine)
            for name, model in ctx.models.items():
                if model.kind.is_external:
                    continue
                query = ctx.render(name, start="2026-05-01", end="2026-05-01", execution_time="2026-05-02")
                out.setdefault(model.name, {})[engine] = query.sql(
                    dialect=engine, unsupported_level=ErrorLevel.RAISE, pretty=True
                )
            ctx.close()
    return out


def _code(sql: str) -> str:
    """The SQL without comments and literals, upper-cased, on one line."""
    sql = re.sub(r"/\*.*?\*/|--[^\n]*", " ", sql, flags=re.S)
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    return " ".join(sql.upper().split())


def _flat(sql: str) -> str:
    """Whitespace-insensitive form: no comments, no spaces at all outside literals."""
    sql = re.sub(r"/\*.*?\*/", "", sql, flags=re.S)
    return re.sub(r"\s+", "", sql)


def test_every_model_renders_for_each_engine(rendered: dict[str, dict[str, str]]) -> None:
    models = {p.stem for p in Path(BUNDLED_SQLMESH_PROJECT, "models").rglob("*.sql")}
    assert {name.split(".")[-1] for name in rendered} == models
    assert all(set(by_engine) == set(ENGINES) for by_engine in rendered.values())


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_only_documented_functions_are_called(rendered: dict[str, dict[str, str]], engine: str) -> None:
    for name, by_engine in rendered.items():
        code = re.sub(r'"[^"]*"', '""', _code(by_engine[engine]))
        called = {f.lower() for f in re.findall(r"\b([A-Z_][A-Z0-9_]*)\s*\(", code)} - SYNTAX
        assert called <= DOCUMENTED_FUNCTIONS, f"{name} on {engine}: {sorted(called - DOCUMENTED_FUNCTIONS)}"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_no_duckdb_syntax_reaches_the_engine(rendered: dict[str, dict[str, str]], engine: str) -> None:
    for name, by_engine in rendered.items():
        code = re.sub(r'"[^"]*"', '""', _code(by_engine[engine]))
        assert not [s for s in DUCKDB_ONLY if s.strip() in code], f"{name}: DuckDB syntax on {engine}"
        # Trino's grammar allows IGNORE/RESPECT NULLS only in front of OVER (window functions)
        for treatment in re.finditer(r"\b(IGNORE|RESPECT) NULLS\b(?! OVER\b)", code):
            pytest.fail(f"{name} on {engine}: {treatment.group(0)} outside a window: {code}")
        # every table is named catalog.schema.table in the engine's catalog
        tables = re.findall(r'\b(?:FROM|JOIN) ("[^"]+"\."[^"]+"\."[^"]+"|\S+)', by_engine[engine].upper())
        assert tables and all(t.startswith(f'"{ENGINES[engine].upper()}".') for t in tables), (name, tables)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_stg_customers_is_the_hand_checked_sql(rendered: dict[str, dict[str, str]], engine: str) -> None:
    expected = STG_CUSTOMERS.format(catalog=ENGINES[engine])
    assert _flat(rendered["staging.stg_customers"][engine]) == _flat(expected)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_specific_forms(rendered: dict[str, dict[str, str]], engine: str) -> None:
    """Forms whose spelling differs from DuckDB, each as the engine's documentation writes it."""
    revenue = _flat(rendered["marts.daily_revenue"][engine])
    # date literals as CAST('YYYY-MM-DD' AS DATE); aggregate FILTER (WHERE ...)
    assert "\"order_date\"<=CAST('2026-05-01'ASDATE)" in revenue
    assert 'SUM("fct_orders"."order_total_usd")FILTER(WHERE' in revenue
    # date_diff(unit, start, end): the unit is a string and comes first (Trino's date functions page)
    tenure = _flat(rendered["marts.dim_customers"][engine])
    assert 'DATE_DIFF(\'DAY\',"stg_customers"."signup_date",' in tenure
    # PII stays hashed: no raw email or name column in any staging output
    customers = _code(rendered["staging.stg_customers"][engine])
    assert "FULL_NAME" not in customers and not re.search(r'AS "EMAIL"(?!_)', customers)
