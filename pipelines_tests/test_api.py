"""The data API against a real warehouse: listings, schemas, paged filtered rows, errors, fuzzing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from pipelines.api import create_app
from pipelines.api.auth import KeyRing, parse_keys, token_hash
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import connect

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-full-access-0123456789"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS: KeyRing = parse_keys(json.dumps({token_hash(TOKEN): "*"}), "test keys")


def make_app(settings: Settings) -> FastAPI:
    return create_app(settings, keys=KEYS)


@pytest.fixture(scope="module")
def client(built_warehouse: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(built_warehouse), headers=AUTH) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def con(built_warehouse: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(built_warehouse, read_only=True)
    yield connection
    connection.close()


def sql_rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> list:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [
        {n: (v.isoformat() if hasattr(v, "isoformat") else v) for n, v in zip(names, row, strict=True)}
        for row in cur.fetchall()
    ]


def test_health_and_ready(client: TestClient) -> None:
    response = client.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "env": "local"}
    response = client.get("/ready", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}  # nothing about the data without a token
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "env": "local", "datasets": 5}


def test_lists_every_mart_with_row_counts(client: TestClient, con: duckdb.DuckDBPyConnection) -> None:
    body = client.get("/datasets").json()
    names = [d["name"] for d in body["datasets"]]
    expected = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1"
        ).fetchall()
    ]
    assert (
        names
        == expected
        == sorted(["category_sales", "daily_revenue", "dim_customers", "fct_orders", "web_funnel"])
    )
    for dataset in body["datasets"]:
        (count,) = con.execute(f"SELECT count(*) FROM marts.{dataset['name']}").fetchone()
        assert dataset["row_count"] == count > 0
        assert dataset["description"]


def test_schema_has_types_descriptions_and_classifications(
    client: TestClient, con: duckdb.DuckDBPyConnection
) -> None:
    body = client.get("/datasets/dim_customers").json()
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'marts' AND table_name = 'dim_customers'"
        ).fetchall()
    )
    assert {c["name"]: c["type"] for c in body["columns"]} == types
    by_name = {c["name"]: c for c in body["columns"]}
    assert by_name["email_hash"]["classification"] == "pii-masked"
    assert by_name["customer_id"]["description"] == "Customer identifier"
    assert all(c["description"] for c in body["columns"])
    assert body["description"].startswith("One row per customer")
    assert body["row_count"] == con.execute("SELECT count(*) FROM marts.dim_customers").fetchone()[0]


def test_rows_filtered_and_paged_like_sql(client: TestClient, con: duckdb.DuckDBPyConnection) -> None:
    expected = sql_rows(
        con,
        "SELECT * FROM marts.fct_orders WHERE status = ? AND customer_segment = ? ORDER BY ALL",
        ["shipped", "vip"],
    )
    assert len(expected) > 15
    pages, offset = [], 0
    while offset is not None:
        response = client.get(
            "/datasets/fct_orders/rows",
            params={"status": "shipped", "customer_segment": "vip", "limit": 7, "offset": offset},
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(expected) and page["limit"] == 7
        assert len(page["rows"]) <= 7
        pages.extend(page["rows"])
        offset = page["next_offset"]
    assert pages == expected


def test_rows_order_by_and_repeated_filter(client: TestClient, con: duckdb.DuckDBPyConnection) -> None:
    page = client.get("/datasets/daily_revenue/rows", params={"order_by": "-order_date"}).json()
    assert page["rows"] == sql_rows(con, "SELECT * FROM marts.daily_revenue ORDER BY order_date DESC")
    assert page["next_offset"] is None

    params = [("order_date", "2026-11-20"), ("order_date", "2026-11-22"), ("order_by", "-units,category")]
    rows = client.get("/datasets/category_sales/rows", params=params).json()["rows"]
    assert rows == sql_rows(
        con,
        "SELECT * FROM marts.category_sales WHERE order_date IN ('2026-11-20', '2026-11-22') "
        "ORDER BY units DESC, category, order_date, revenue_usd",
    )
    default = client.get("/datasets/fct_orders/rows").json()
    assert len(default["rows"]) == default["limit"] == 100 and default["next_offset"] == 100


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/datasets/nope", {}),
        ("/datasets/nope/rows", {}),
        ("/datasets/stg_orders", {}),  # exists, but in staging: only marts are served
        ("/datasets/int_order_lines/rows", {}),
        ("/datasets/daily_revenue; DROP TABLE x", {}),
        ("/datasets/daily_revenue/rows", {"nope": "1"}),
        ("/datasets/daily_revenue/rows", {'orders" OR 1=1 --': "1"}),
        ("/datasets/daily_revenue/rows", {"order_by": "nope"}),
    ],
)
def test_unknown_names_are_404(client: TestClient, url: str, params: dict[str, str]) -> None:
    response = client.get(url, params=params)
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"order_by": "orders;DROP"},
        {"order_date": "not-a-date"},
        {"orders": "1.5"},
    ],
)
def test_bad_parameters_are_422(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/datasets/daily_revenue/rows", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_filter_values_are_parameters_not_sql(client: TestClient) -> None:
    response = client.get("/datasets/fct_orders/rows", params={"status": "shipped' OR '1'='1"})
    assert response.status_code == 200
    assert response.json()["total"] == 0


@pytest.fixture()
def odd_warehouse(tmp_path: Path, built_warehouse: Settings) -> Settings:
    """A warehouse with a leaky mart (a raw e-mail its model does not list) and a mart whose
    comments were lost."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as db:
        db.execute("CREATE SCHEMA marts")
        db.execute(
            "CREATE TABLE marts.dim_customers AS SELECT 1::BIGINT AS customer_id, "
            "'someone@example.com' AS email, 'abc' AS email_hash"
        )
        db.execute("CREATE TABLE marts.daily_revenue (order_date DATE, orders BIGINT)")
    return dataclasses.replace(built_warehouse, data_dir=data_dir)


def test_pii_columns_are_never_served(odd_warehouse: Settings) -> None:
    client = TestClient(make_app(odd_warehouse), headers=AUTH)
    columns = client.get("/datasets/dim_customers").json()["columns"]
    assert [(c["name"], c["classification"]) for c in columns] == [
        ("customer_id", "internal"),
        ("email_hash", "pii-masked"),
    ]
    page = client.get("/datasets/dim_customers/rows").json()
    assert page["rows"] == [{"customer_id": 1, "email_hash": "abc"}]
    assert "someone@example.com" not in client.get("/datasets/dim_customers/rows").text
    assert client.get("/datasets/dim_customers/rows", params={"email": "x"}).status_code == 404
    assert client.get("/datasets/dim_customers/rows", params={"order_by": "email"}).status_code == 404


def test_descriptions_fall_back_to_the_model_files(odd_warehouse: Settings) -> None:
    client = TestClient(make_app(odd_warehouse), headers=AUTH)
    body = client.get("/datasets/daily_revenue").json()
    assert body["description"].startswith("Revenue KPIs per day")
    assert {c["name"]: c["description"] for c in body["columns"]} == {
        "order_date": "Day",
        "orders": "Orders placed",
    }


def test_missing_warehouse_is_503_but_alive(tmp_path: Path, built_warehouse: Settings) -> None:
    client = TestClient(make_app(dataclasses.replace(built_warehouse, data_dir=tmp_path)), headers=AUTH)
    for url in ("/ready", "/datasets"):
        response = client.get(url)
        assert response.status_code == 503
        assert response.json()["detail"].startswith("warehouse unavailable")
    assert client.get("/health").status_code == 200


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/health",
        "/ready",
        "/datasets",
        "/datasets/{name}",
        "/datasets/{name}/rows",
    }
    for path, operations in spec["paths"].items():
        responses = operations["get"]["responses"]
        assert "$ref" in responses["200"]["content"]["application/json"]["schema"], path
        if path.startswith("/datasets/"):
            for status in ("404", "422"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    params = {p["name"]: p for p in spec["paths"]["/datasets/{name}/rows"]["get"]["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 1000 and params["limit"]["schema"]["minimum"] == 1
    assert {"RowsPage", "DatasetSchema", "DatasetList", "ColumnInfo", "ErrorResponse"} <= set(
        spec["components"]["schemas"]
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_finds_no_server_errors(built_warehouse: Settings, mode: GenerationMode) -> None:
    """Every operation, fuzzed with valid and invalid input: never a 5xx, always as documented.

    Drives hypothesis directly: schemathesis' lazy pytest fixture does not support pytest 9.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(built_warehouse))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    seen: dict[str, set[int]] = {}

    real_names = ["daily_revenue", "fct_orders", "dim_customers", "web_funnel", "category_sales"]

    @given(
        case=st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations)),
        real_name=st.one_of(st.none(), st.sampled_from(real_names)),
    )
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case, real_name: str | None) -> None:
        if real_name and case.path_parameters and "name" in case.path_parameters:
            case.path_parameters["name"] = real_name  # reach the queries, not only the 404s
        response = case.call_and_validate(headers=AUTH)
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        assert response.status_code < 500, (case.path, case.query, response.text)

    fuzz()
    assert all(status < 500 for statuses in seen.values() for status in statuses)
    expected = 5 if mode is GenerationMode.POSITIVE else 1  # only /rows takes negatable input
    assert len(seen) >= expected, seen
    if mode is GenerationMode.POSITIVE:
        assert 200 in seen["GET /datasets/{name}/rows"], seen


def _team_project(root: Path, data_dir: Path) -> Path:
    """A project this repository never saw: its PII is declared in its own governance.yaml on a
    staging column, and its mart renames that column (``contact_email``, ``"Email"``)."""
    project = root / "team_project"
    (project / "models").mkdir(parents=True)
    (project / "config.yaml").write_text(
        "gateways:\n  local:\n    connection:\n      type: duckdb\n"
        f"      database: {data_dir / 'warehouse.duckdb'}\n"
        "default_gateway: local\nmodel_defaults:\n  dialect: duckdb\n"
    )
    (project / "models" / "people.sql").write_text(
        "MODEL (name staging.people, kind FULL);\n"
        "SELECT 1::BIGINT AS person_id, 'someone@example.com' AS email_address, 'Lyon' AS city"
    )
    (project / "models" / "contacts.sql").write_text(
        "MODEL (name marts.contacts, kind FULL);\n"
        'SELECT person_id, email_address AS contact_email, upper(email_address) AS "Email", city '
        "FROM staging.people"
    )
    (project / "governance.yaml").write_text(
        "models:\n  staging.people:\n    columns:\n      email_address: {classification: pii}\n"
        "      city: {classification: public}\n"
    )
    return project


def test_pii_follows_the_configured_projects_classification(
    tmp_path: Path, built_warehouse: Settings
) -> None:
    """PII is what the UI's classification says (governance.yaml and column lineage), for any
    project: renamed e-mail columns of a team's mart are not served, whatever their names."""
    from sqlmesh import Context

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    project = _team_project(tmp_path, data_dir)
    ctx = Context(paths=[str(project)])
    ctx.plan(auto_apply=True, no_prompts=True)
    ctx.close()
    settings = dataclasses.replace(built_warehouse, data_dir=data_dir, sqlmesh_project_dir=project)
    client = TestClient(make_app(settings), headers=AUTH)
    columns = client.get("/datasets/contacts").json()["columns"]
    assert [(c["name"], c["classification"]) for c in columns] == [
        ("person_id", "internal"),
        ("city", "public"),
    ]
    page = client.get("/datasets/contacts/rows")
    assert page.json()["rows"] == [{"person_id": 1, "city": "Lyon"}]
    assert "someone@example.com" not in page.text and "SOMEONE@EXAMPLE.COM" not in page.text
    assert client.get("/datasets/contacts/rows", params={"contact_email": "x"}).status_code == 404
