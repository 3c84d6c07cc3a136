"""``pipelines bootstrap-db`` on a real PostgreSQL: twice in a row, and each role can do what it
needs and nothing more."""

from __future__ import annotations

import uuid
from contextlib import closing
from pathlib import Path

import duckdb
import psycopg2
import pytest

from pipelines.ops.cli import main
from pipelines.platform.bootstrap import BootstrapError, BootstrapPlan
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines_tests.services import PostgresServer


def _environ(server: PostgresServer, suffix: str, password: str) -> dict[str, str]:
    """The Job's environment (deploy/bootstrap-db-job.yaml), with names unique to this test."""
    return {
        "BOOTSTRAP_PG_HOST": server.host,
        "BOOTSTRAP_PG_PORT": str(server.port),
        "BOOTSTRAP_PG_ADMIN_USER": server.user,
        "BOOTSTRAP_PG_ADMIN_PASSWORD": server.password,
        "BOOTSTRAP_PG_SSLMODE": "disable",
        "DAGSTER_PG_USERNAME": f"dagster_{suffix}",
        "PIPELINES_PG_USER": f"pipelines_{suffix}",
        "DATA_API_PG_USER": f"data_api_{suffix}",
        "DAGSTER_PG_DB": f"dagster_{suffix}",
        "PIPELINES_SQLMESH_STATE_DB": f"sqlmesh_{suffix}",
        "PIPELINES_DUCKLAKE_DB": f"ducklake_{suffix}",
        "DAGSTER_PG_PASSWORD": f"dagster-{password}",
        "PIPELINES_PG_PASSWORD": f"pipelines-{password}",
        "DATA_API_PG_PASSWORD": f"api-{password}",
    }


def _connect(
    server: PostgresServer, user: str, password: str, database: str
) -> psycopg2.extensions.connection:
    con = psycopg2.connect(host=server.host, port=server.port, user=user, password=password, dbname=database)
    con.autocommit = True
    return con


def _refused(server: PostgresServer, user: str, password: str, database: str) -> bool:
    try:
        _connect(server, user, password, database).close()
    except psycopg2.OperationalError as exc:
        return "permission denied" in str(exc)
    return False


def _sql_fails(con: psycopg2.extensions.connection, statement: str) -> bool:
    try:
        with con.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as exc:
        return "permission denied" in str(exc)
    return False


def test_bootstrap_twice_then_each_role_has_exactly_its_rights(
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    first = _environ(postgres_server, suffix, "first")
    for name, value in first.items():
        monkeypatch.setenv(name, value)
    assert main(["bootstrap-db"]) == 0
    assert '"created"' in capsys.readouterr().out

    # Second run with new passwords (a rotation): no error, the new passwords work.
    env = _environ(postgres_server, suffix, "second")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["bootstrap-db"]) == 0
    out = capsys.readouterr().out
    assert '"created"' not in out and '"exists"' in out and '"updated"' in out
    assert "second" not in out and "first" not in out, "no password is printed"

    dagster, pipelines, api = env["DAGSTER_PG_USERNAME"], env["PIPELINES_PG_USER"], env["DATA_API_PG_USER"]
    dagster_db, sqlmesh_db, ducklake_db = (
        env["DAGSTER_PG_DB"],
        env["PIPELINES_SQLMESH_STATE_DB"],
        env["PIPELINES_DUCKLAKE_DB"],
    )
    pw = {
        dagster: env["DAGSTER_PG_PASSWORD"],
        pipelines: env["PIPELINES_PG_PASSWORD"],
        api: env["DATA_API_PG_PASSWORD"],
    }
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _connect(postgres_server, dagster, "dagster-first", dagster_db)

    # dagster: its own database, full rights there; no other database.
    with _connect(postgres_server, dagster, pw[dagster], dagster_db) as con, con.cursor() as cur:
        cur.execute("CREATE TABLE runs (id int)")
        cur.execute("INSERT INTO runs VALUES (1)")
    assert _refused(postgres_server, dagster, pw[dagster], sqlmesh_db)
    assert _refused(postgres_server, dagster, pw[dagster], ducklake_db)

    # pipelines: SQLMesh state and DuckLake catalog; not Dagster's database.
    with _connect(postgres_server, pipelines, pw[pipelines], sqlmesh_db) as con, con.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS sqlmesh")
        cur.execute("CREATE TABLE sqlmesh.state (x int)")
    assert _refused(postgres_server, pipelines, pw[pipelines], dagster_db)

    # A real DuckLake catalog written by `pipelines`, then read (and only read) by `data_api`.
    install_extensions()
    data_path = tmp_path / "warehouse"
    data_path.mkdir()

    def attach(user: str, read_only: bool) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute("LOAD ducklake; LOAD postgres_scanner")
        con.execute(
            f"ATTACH 'ducklake:postgres:dbname={ducklake_db} host={postgres_server.host} "
            f"port={postgres_server.port} user={user} password={pw[user]}' AS lake "
            f"(DATA_PATH '{data_path}/', METADATA_SCHEMA 'main'{', READ_ONLY' if read_only else ''})"
        )
        return con

    writer = attach(pipelines, read_only=False)
    writer.execute("CREATE SCHEMA lake.marts; CREATE TABLE lake.marts.daily AS SELECT 42 AS revenue")
    writer.close()
    reader = attach(api, read_only=True)
    assert reader.execute("SELECT revenue FROM lake.marts.daily").fetchall() == [(42,)]
    reader.close()

    with closing(_connect(postgres_server, api, pw[api], ducklake_db)) as con:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM main.ducklake_table")  # created after bootstrap
            assert cur.fetchone()[0] >= 1
        assert _sql_fails(con, "INSERT INTO main.ducklake_metadata VALUES ('k', 'v', NULL, NULL)")
        assert _sql_fails(con, "DELETE FROM main.ducklake_table")
        assert _sql_fails(con, "CREATE TABLE main.x (i int)")
        assert _sql_fails(con, "CREATE TABLE public.x (i int)")
    assert _refused(postgres_server, api, pw[api], dagster_db)
    assert _refused(postgres_server, api, pw[api], sqlmesh_db)

    with postgres_server.connect() as con, con.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = ANY(%s)",
            ([dagster, pipelines, api],),
        )
        rows = cur.fetchall()
    assert len(rows) == 3 and all(not any(flags) for _, *flags in rows)


def test_missing_password_is_an_error_naming_the_variable(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _environ(postgres_server, "x", "pw")
    del env["DATA_API_PG_PASSWORD"]
    monkeypatch.delenv("DATA_API_PG_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["bootstrap-db"]) == 2
    assert "DATA_API_PG_PASSWORD is not set" in capsys.readouterr().err
    with pytest.raises(ValueError, match="DAGSTER_PG_DB"):
        BootstrapPlan.from_env({**env, "DATA_API_PG_PASSWORD": "p", "DAGSTER_PG_DB": 'x"; DROP'})
    assert issubclass(BootstrapError, ValueError)
