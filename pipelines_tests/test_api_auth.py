"""Credentials on the data API: 401 without a known token, 403 outside its datasets, never logged."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from pipelines.api import create_app
from pipelines.api.auth import TOKEN_FILE, AuthConfigError, load_keys, parse_keys, token_hash
from pipelines.platform.settings import Settings
from pipelines_tests.api_server import REPO, api_process

FULL = "full-7d1c0b7e2f4a49c4b8c1a2b3c4d5e6f7"  # noqa: S105 - test credentials
REVENUE_ONLY = "revenue-5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"  # noqa: S105
WRONG = "wrong-00000000000000000000000000000000"  # noqa: S105
KEYS_JSON = json.dumps({token_hash(FULL): "*", token_hash(REVENUE_ONLY): ["daily_revenue", "category_sales"]})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def client(built_warehouse: Settings) -> TestClient:
    return TestClient(create_app(built_warehouse, keys=parse_keys(KEYS_JSON, "test")))


DATA_URLS = ["/datasets", "/datasets/daily_revenue", "/datasets/daily_revenue/rows"]


@pytest.mark.parametrize("url", DATA_URLS)
@pytest.mark.parametrize(
    "headers",
    [{}, bearer(WRONG), bearer(""), {"Authorization": FULL}, {"Authorization": f"Basic {FULL}"}],
    ids=["none", "wrong", "empty", "no-scheme", "basic"],
)
def test_no_or_wrong_token_is_401(client: TestClient, url: str, headers: dict[str, str]) -> None:
    response = client.get(url, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "a valid bearer token is required"}


def test_token_limited_to_its_datasets(client: TestClient) -> None:
    listed = client.get("/datasets", headers=bearer(REVENUE_ONLY)).json()["datasets"]
    assert sorted(d["name"] for d in listed) == ["category_sales", "daily_revenue"]
    for url in ("/datasets/fct_orders", "/datasets/fct_orders/rows", "/datasets/dim_customers/rows"):
        response = client.get(url, headers=bearer(REVENUE_ONLY))
        assert response.status_code == 403, url
        assert "may not read" in response.json()["detail"]
    # a name it may not read is 403 whether or not it exists: no probing for dataset names
    assert client.get("/datasets/no_such_mart", headers=bearer(REVENUE_ONLY)).status_code == 403
    page = client.get("/datasets/daily_revenue/rows", headers=bearer(REVENUE_ONLY))
    assert page.status_code == 200 and page.json()["total"] == 3
    everything = client.get("/datasets", headers=bearer(FULL)).json()["datasets"]
    assert len(everything) == 5
    assert client.get("/datasets/fct_orders/rows", headers=bearer(FULL)).status_code == 200


def test_probes_and_openapi_stay_open_and_declare_the_scheme(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    for headers in ({}, bearer(WRONG), {"Authorization": f"Basic {FULL}"}):
        ready = client.get("/ready", headers=headers)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    # with a token, the datasets that token may read
    assert client.get("/ready", headers=bearer(REVENUE_ONLY)).json()["datasets"] == 2
    assert client.get("/ready", headers=bearer(FULL)).json()["datasets"] == 5
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    body = spec.json()
    assert body["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": body["components"]["securitySchemes"]["bearerToken"]["description"],
    }
    for path, operations in body["paths"].items():
        security = operations["get"].get("security")
        if path.startswith("/datasets"):
            assert security == [{"bearerToken": []}], path
            assert {"401", "403"} <= set(operations["get"]["responses"]), path
        elif path == "/ready":
            assert security == [{}, {"bearerToken": []}]  # optional: details only to a token
        else:
            assert security is None, path


def test_key_secret_is_validated_without_echoing_it(tmp_path: Path, built_warehouse: Settings) -> None:
    with pytest.raises(AuthConfigError) as error:
        parse_keys(json.dumps({FULL: "*"}), "PIPELINES_API_KEYS")  # a plaintext token by mistake
    assert FULL not in str(error.value) and "not a hex SHA-256" in str(error.value)
    with pytest.raises(AuthConfigError, match="not valid JSON"):
        parse_keys("{", "x")
    with pytest.raises(AuthConfigError, match="list of dataset names"):
        parse_keys(json.dumps({token_hash(FULL): "daily_revenue"}), "x")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(KEYS_JSON)
    ring = load_keys(built_warehouse, {"PIPELINES_API_KEYS_FILE": str(keys_file)})
    assert ring.grant_for(FULL) is not None and ring.grant_for(WRONG) is None
    assert not ring.grant_for(REVENUE_ONLY).allows("fct_orders")  # type: ignore[union-attr]
    with pytest.raises(AuthConfigError, match="not both"):
        load_keys(
            built_warehouse, {"PIPELINES_API_KEYS_FILE": str(keys_file), "PIPELINES_API_KEYS": KEYS_JSON}
        )


def test_local_default_is_a_generated_dev_token(tmp_path: Path, built_warehouse: Settings) -> None:
    import dataclasses

    settings = dataclasses.replace(built_warehouse, data_dir=tmp_path / "data")
    ring = load_keys(settings, {})
    token_path = settings.data_dir / TOKEN_FILE
    token = token_path.read_text().strip()
    assert len(token) >= 40 and stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert ring.grant_for(token) is not None and token not in ring.source
    assert load_keys(settings, {}).grant_for(token) is not None  # stable across restarts
    prod = dataclasses.replace(settings, env="prod")
    with pytest.raises(AuthConfigError, match="no API keys configured"):
        load_keys(prod, {})


def test_prod_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PIPELINES_ENV": "prod",
        "PIPELINES_DATA_DIR": str(tmp_path),
        "PIPELINES_LAKE_URI": "s3://bucket/lake",
    }
    env.pop("PIPELINES_API_KEYS", None)
    env.pop("PIPELINES_API_KEYS_FILE", None)
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.api"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "not starting: no API keys configured" in out.stderr
    env["PIPELINES_API_KEYS"] = KEYS_JSON  # keys alone are not enough: the read-only role is needed
    env.pop("PIPELINES_API_PG_USER", None)
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.api"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "PIPELINES_API_PG_USER is not set" in out.stderr


def test_served_process_never_logs_a_token(tmp_path: Path, built_warehouse: Settings) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(KEYS_JSON)
    env = {
        **os.environ,
        "PIPELINES_ENV": "local",
        "PIPELINES_DATA_DIR": str(built_warehouse.data_dir),
        "PIPELINES_LAKE_URI": built_warehouse.lake_uri,
        "PIPELINES_API_KEYS_FILE": str(keys_file),
    }
    with api_process(env, tmp_path / "api.log") as api:
        statuses = []
        for token, url in [
            (FULL, "/datasets"),
            (FULL, "/datasets/fct_orders/rows?limit=2"),
            (REVENUE_ONLY, "/datasets/fct_orders/rows"),
            (REVENUE_ONLY, "/datasets/daily_revenue"),
            (WRONG, "/datasets"),
        ]:
            statuses.append(httpx.get(api.url + url, headers=bearer(token), timeout=30).status_code)
        statuses.append(httpx.get(api.url + "/datasets", timeout=30).status_code)
        assert statuses == [200, 200, 403, 200, 401, 401]
        assert len(httpx.get(api.url + "/datasets", headers=bearer(FULL)).json()["datasets"]) == 5
    logs = api.logs()
    assert '"GET /datasets/fct_orders/rows HTTP/1.1" 403' in logs  # the access log is on
    assert f"API credentials: PIPELINES_API_KEYS_FILE={keys_file}" in logs
    for token in (FULL, REVENUE_ONLY, WRONG):
        assert token not in logs
        assert token[:12] not in logs


def test_connection_settings_are_checked(built_warehouse: Settings) -> None:
    from pipelines.api.connection import ApiConfigError, CatalogConnections, catalog_login

    with pytest.raises(ApiConfigError, match="PIPELINES_API_CONNECTION_TTL must be seconds"):
        CatalogConnections(built_warehouse, {"PIPELINES_API_CONNECTION_TTL": "soon"})
    with pytest.raises(ApiConfigError, match="PIPELINES_API_PG_USER is not set"):
        catalog_login({"PIPELINES_PG_USER": "pipelines", "PIPELINES_PG_PASSWORD": "x"})
    login = catalog_login({"PIPELINES_API_PG_USER": "api", "PIPELINES_API_PG_PASSWORD": "pw"})
    assert (login["USER"], login["PASSWORD"]) == ("api", "pw")
    # TLS like every other connection: require by default in prod, PIPELINES_PG_SSLMODE decides
    assert catalog_login({"PIPELINES_API_PG_USER": "api", "PIPELINES_ENV": "prod"})["SSLMODE"] == "require"
    custom = {"PIPELINES_API_PG_USER": "api", "PIPELINES_ENV": "prod", "PIPELINES_PG_SSLMODE": "verify-full"}
    assert catalog_login(custom)["SSLMODE"] == "verify-full"
