"""The ``PIPELINES_ENV=prod`` setup that several test modules share: PostgreSQL + S3 + DuckLake.

One place builds the variables, so the prod-stack, concurrency and security tests all run the
same deployment shape and differ only where they mean to (which roles and passwords they use).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from pipelines.shop.sources.readers import start_demo_rates_api
from pipelines_tests.services import PostgresServer, S3Env


def build_prod_env(
    server: PostgresServer,
    s3: S3Env,
    tmp_path: Path,
    dbs: Mapping[str, str],
    *,
    warehouse_user: str | None = None,
    warehouse_password: str | None = None,
    shop_user: str | None = None,
    shop_password: str | None = None,
) -> dict[str, str]:
    """The prod settings: lake on S3, SQLMesh state and DuckLake catalog in ``dbs``' databases.

    ``dbs`` names the ``sqlmesh``, ``ducklake`` and ``shop`` databases. The warehouse
    (``PIPELINES_PG_*``) and shop (``SHOP_DB_*``) logins default to the server's own user; the
    overrides let a test give each its own role and secret.
    """
    return {
        "PIPELINES_ENV": "prod",
        "SQLMESH_GATEWAY": "prod",
        "PIPELINES_LAKE_URI": s3.uri("lake"),
        "PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "PIPELINES_BRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "PIPELINES_DUCKLAKE_DB": dbs["ducklake"],
        "PIPELINES_SQLMESH_STATE_DB": dbs["sqlmesh"],
        "PIPELINES_DEMO_SEED": "1",  # the demo plays the shop: it fills the PostgreSQL shop DB
        "SHOP_DB_HOST": server.host,
        "SHOP_DB_PORT": str(server.port),
        "SHOP_DB_NAME": dbs["shop"],
        "SHOP_DB_USER": shop_user or server.user,
        "SHOP_DB_PASSWORD": shop_password or server.password,
        "PIPELINES_PG_HOST": server.host,
        "PIPELINES_PG_PORT": str(server.port),
        "PIPELINES_PG_USER": warehouse_user or server.user,
        "PIPELINES_PG_PASSWORD": warehouse_password or server.password,
        # the test server speaks no TLS; prod's default (require) is tested in test_prod_config
        "PIPELINES_PG_SSLMODE": "prefer",
        "PIPELINES_PII_SALT": "test-salt-not-a-secret",
    }


@contextmanager
def prod_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in this process's environment (undone by ``monkeypatch``) with the demo rates API
    serving, as prod's readers expect, until the block ends."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SQLMESH_PROJECT_DIR", raising=False)  # the bundled project, as in prod
    api = start_demo_rates_api()
    monkeypatch.setenv("PIPELINES_RATES_API_URL", f"http://127.0.0.1:{api.server_address[1]}")
    try:
        yield
    finally:
        api.shutdown()


@contextmanager
def postgres_instance(tmp_path: Path, server: PostgresServer, database: str) -> Iterator[dg.DagsterInstance]:
    """A test Dagster instance whose run/event storage is ``database`` on ``server``, as in prod."""
    url = server.url(database).replace("postgresql://", "postgresql+psycopg2://")
    storage = {"postgres": {"postgres_url": url}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"storage": storage}) as instance:
        yield instance


MARTS = ("daily_revenue", "fct_orders", "category_sales", "web_funnel", "dim_customers")


def mart_fingerprints() -> dict[str, tuple[int, int]]:
    """Row count and an order-independent checksum of every mart, read as the API reads them."""
    from pipelines.platform import warehouse

    with warehouse.warehouse() as con:
        return {
            name: con.execute(
                f"SELECT count(*), coalesce(sum(hash(t)::HUGEINT), 0) FROM marts.{name} t"
            ).fetchone()
            for name in MARTS
        }
