"""Secrets stay secret, and names that become SQL or paths are validated.

The prod pipeline (PostgreSQL + S3 + DuckLake, as in test_prod_stack.py) runs with distinctive
secret values: the warehouse role's password, the shop database's password, the AWS secret key
and the PII salt. Afterwards none of them may appear in the repo's tracked files, the run's
event log (messages and serialized records), any file the run left on disk (compute logs,
caches, Dagster storage), materialization or check metadata, the three PostgreSQL databases
(Dagster, SQLMesh state, DuckLake catalog) or the bucket's objects.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dagster_sqlmesh_bridge.identifiers import (
    InvalidIdentifierError,
    safe_file_name,
    safe_identifier,
    safe_partition_key,
)
from pipelines.platform.settings import Settings
from pipelines.shop.sources.readers import attach_shop_database
from pipelines_tests.conftest import Deployment
from pipelines_tests.prod_env import build_prod_env, postgres_instance, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-04-06"


def make_role(server: PostgresServer, password: str) -> str:
    """A login role with ``password`` (passed as a parameter, so any character is fine)."""
    name = f"sec_{secrets.token_hex(4)}"
    con = server.connect()
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE ROLE "{name}" LOGIN SUPERUSER PASSWORD %s', (password,))
    finally:
        con.close()
    return name


@pytest.fixture
def secret_values() -> dict[str, str]:
    token = secrets.token_hex(6)
    return {
        "PIPELINES_PG_PASSWORD": f"pgWarehouseSecret-{token}",
        "SHOP_DB_PASSWORD": f"shopDbSecret-{token}",
        "AWS_SECRET_ACCESS_KEY": f"awsSecretKey-{token}",
        "PIPELINES_PII_SALT": f"piiSaltSecret-{token}",
    }


@pytest.fixture
def prod(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
    s3_env: S3Env,
    secret_values: dict[str, str],
) -> Iterator[Deployment]:
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    warehouse_role = make_role(postgres_server, secret_values["PIPELINES_PG_PASSWORD"])
    shop_role = make_role(postgres_server, secret_values["SHOP_DB_PASSWORD"])
    env = build_prod_env(
        postgres_server,
        s3_env,
        tmp_path,
        dbs,
        warehouse_user=warehouse_role,
        warehouse_password=secret_values["PIPELINES_PG_PASSWORD"],
        shop_user=shop_role,
        shop_password=secret_values["SHOP_DB_PASSWORD"],
    )
    # the AWS secret key (moto accepts any) and the PII salt take the distinctive values too
    env.update(secret_values)
    with (
        prod_environment(monkeypatch, env),
        postgres_instance(tmp_path, postgres_server, dbs["dagster"]) as instance,
    ):
        yield Deployment(tmp_path, Settings.from_env(), instance)


def forms(value: str) -> list[bytes]:
    """The secret as text, hex and UTF-16 (how a value may sit in a binary column or file)."""
    return [value.encode(), value.encode().hex().encode(), value.encode("utf-16-le")]


def leaks(blob: bytes | str, secret_values: dict[str, str]) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [name for name, value in secret_values.items() if any(f in data for f in forms(value))]


def pg_text(server: PostgresServer, database: str) -> Iterator[tuple[str, str]]:
    """Every row of every user table of ``database`` as text, by table."""
    con = server.connect(database)
    try:
        with con.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            )
            for schema, table in cur.fetchall():
                cur.execute(f'SELECT t::text FROM "{schema}"."{table}" AS t')
                yield f"{schema}.{table}", "\n".join(row[0] for row in cur.fetchall())
    finally:
        con.close()


def test_secrets_appear_nowhere_after_a_prod_run(
    prod: Deployment,
    postgres_server: PostgresServer,
    s3_env: S3Env,
    secret_values: dict[str, str],
    tmp_path: Path,
) -> None:
    result = prod.run("*", start=DAY)
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    # the salt was really used: the customers' e-mail hashes depend on it
    assert result.get_asset_materialization_events()
    found: dict[str, list[str]] = {}

    def check(where: str, blob: bytes | str) -> None:
        names = leaks(blob, secret_values)
        if names:
            found.setdefault(where, []).extend(names)

    # 1. tracked source files
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        path = REPO / rel
        if path.is_file():
            check(f"repo:{rel}", path.read_bytes())

    # 2. the run's event log: messages and the serialized records (metadata included)
    records = prod.instance.all_logs(result.run_id)
    assert len(records) > 50
    for entry in records:
        check(f"event:{entry.dagster_event_type}", entry.user_message or "")
        check(f"event:{entry.dagster_event_type}", dg.serialize_value(entry))

    # 3. materialization and check metadata of every asset, as stored
    for key in prod.instance.get_asset_keys():
        event = prod.instance.get_latest_materialization_event(key)
        if event is not None and event.asset_materialization is not None:
            check(f"metadata:{key.to_user_string()}", repr(event.asset_materialization.metadata))
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check("check metadata", repr(event.event_specific_data.metadata))

    # 4. every file the run left on disk: compute logs, Dagster's local storage, caches, profiles
    for path in tmp_path.rglob("*"):
        if path.is_file():
            check(f"file:{path.relative_to(tmp_path)}", path.read_bytes())

    # 5. SQLMesh state, DuckLake catalog, Dagster storage and the shop database, row by row
    for variable in ("PIPELINES_SQLMESH_STATE_DB", "PIPELINES_DUCKLAKE_DB"):
        database = os.environ[variable]
        tables = dict(pg_text(postgres_server, database))
        assert tables, f"{variable} has no tables"
        for table, text in tables.items():
            check(f"pg:{variable}:{table}", text)

    # 6. every object in the bucket (raw Parquet, reports, DuckLake data files)
    client = s3_env.client()
    for obj in client.list_objects_v2(Bucket=s3_env.bucket).get("Contents", []):
        check(f"s3:{obj['Key']}", client.get_object(Bucket=s3_env.bucket, Key=obj["Key"])["Body"].read())

    assert not found, f"secret values found: {found}"


SOURCE_PATTERNS = {
    "AWS access key id": re.compile(rb"AKIA[0-9A-Z]{16}"),
    "private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "inline AWS secret": re.compile(rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{30,}", re.I),
    "password in a URL": re.compile(rb"postgres(?:ql)?(?:\+\w+)?://[^:/\s]+:[^@\s{$]{6,}@"),
}


def test_no_credentials_in_tracked_product_files() -> None:
    """Product code, deployment files and docs hold no key, private key or password (tests may hold fakes)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    hits = []
    for rel in filter(None, tracked.decode().split("\0")):
        if rel.startswith("pipelines_tests/") or not (REPO / rel).is_file():
            continue
        data = (REPO / rel).read_bytes()
        hits += [f"{rel}: {what}" for what, pattern in SOURCE_PATTERNS.items() if pattern.search(data)]
    assert not hits


# ---------------------------------------------------------------------------------- quoting


def test_a_password_with_quotes_reaches_postgres_intact(postgres_server: PostgresServer) -> None:
    """Secrets become quoted literals in DuckDB secrets: a quote must not break or inject."""
    password = 'it\'s a "secret"; DROP TABLE x; -- \\ ok'
    role = make_role(postgres_server, password)
    database = postgres_server.create_database()
    con = duckdb.connect()
    try:
        where = attach_shop_database(
            con,
            postgres={
                "host": postgres_server.host,
                "port": str(postgres_server.port),
                "database": database,
                "user": role,
                "password": password,
            },
        )
        assert con.execute(
            "SELECT current_user FROM postgres_query('shop', 'SELECT current_user')"
        ).fetchone()
        assert password not in where
    finally:
        con.close()


# ---------------------------------------------------------------------------------- identifiers

MALICIOUS = [
    "x; DROP TABLE marts.fct_orders",
    "orders' OR '1'='1",
    'a"b',
    "a b",
    "../etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    "",
    "1abc",
    "a" * 64,
    "ñame",
    "tab\tname",
    "name\n",
    "raw.orders",
    "$(id)",
]


@pytest.mark.parametrize("name", MALICIOUS)
def test_safe_identifier_rejects(name: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        safe_identifier(name)


@pytest.mark.parametrize(
    "key",
    [
        "2026-04-06' OR 1=1 --",
        "2026-04-06; DROP TABLE x",
        "../2026-04-06",
        "2026-04-06/../../x",
        "2026-02-30",
        "2026-4-6",
        "20260406",
        "2026-04-06T00:00",
        " 2026-04-06",
        "2026-04-06\n",
        "",
    ],
)
def test_safe_partition_key_rejects(key: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        safe_partition_key(key)


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../x.jsonl", "..\\x.jsonl", "a/b.jsonl", "x\x00.jsonl", ".env", "", "a" * 201, "x\r.jsonl"],
)
def test_safe_file_name_rejects(name: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        safe_file_name(name)


def test_valid_names_pass_unchanged() -> None:
    assert safe_identifier("fct_orders") == "fct_orders"
    assert safe_partition_key("2026-04-06") == "2026-04-06"
    assert safe_file_name("events-000.jsonl") == "events-000.jsonl"


@pytest.mark.parametrize("schema", ['main"; DROP SCHEMA public CASCADE; --', "main.x", "../x"])
def test_every_ducklake_reader_and_writer_refuses_a_bad_metadata_schema(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema name goes into ATTACH options and catalog queries: it is refused before any SQL."""
    from pipelines.platform import maintenance, sqlmesh_gateways, warehouse
    from pipelines.platform.postgres import ducklake_metadata_schema

    with pytest.raises(InvalidIdentifierError, match="PIPELINES_DUCKLAKE_SCHEMA"):
        ducklake_metadata_schema({"PIPELINES_DUCKLAKE_SCHEMA": schema})
    monkeypatch.setenv("PIPELINES_DUCKLAKE_SCHEMA", schema)
    with pytest.raises(InvalidIdentifierError):
        sqlmesh_gateways.prod_gateway()
    with pytest.raises(InvalidIdentifierError):
        maintenance.metadata_schema()
    with pytest.raises(InvalidIdentifierError):
        warehouse._connect_ducklake(Settings.from_env(), read_only=True)
    assert ducklake_metadata_schema({}) == "main"


@pytest.mark.parametrize("key", ["2026-04-06' OR 1=1 --", "../../2026-04-06", "2026-02-30"])
def test_ingestion_refuses_a_bad_partition_key(deployment: Deployment, key: str) -> None:
    """Directly (``ingest_one``) and through Dagster: refused before any SQL or path is built."""
    from pipelines.platform.resources import LakeResource
    from pipelines.shop.ingestion import ingest_one
    from pipelines.shop.resources import DemoDataResource, RatesApiResource, ShopDatabaseResource
    from pipelines.shop.sources.contracts import CONTRACTS

    lake_dir = deployment.root / "lake"
    resources = (
        LakeResource(uri=str(lake_dir)),
        ShopDatabaseResource(sqlite_path=str(deployment.root / "shop.sqlite")),
        RatesApiResource(),
        DemoDataResource(enabled=False),
    )
    for contract in CONTRACTS.values():
        with pytest.raises(InvalidIdentifierError):
            ingest_one(contract, key, *resources)
    # Dagster refuses a key outside the daily partitions before anything runs
    try:
        result = deployment.run([dg.AssetKey(["raw", "orders"])], start=key)
    except (ValueError, dg.DagsterError) as exc:
        assert key in str(exc) or "partition" in str(exc).lower()
    else:
        assert not result.success
    assert not lake_dir.exists() or not [p for p in lake_dir.rglob("*") if p.is_file()]
