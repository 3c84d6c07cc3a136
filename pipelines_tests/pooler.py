"""A real PgBouncer in front of the test PostgreSQL, as RDS Proxy sits in front of Aurora.

``start_pgbouncer(server, pool_mode)`` writes a generated config (wildcard database, SCRAM
logins, the server's own user as admin), starts Debian's ``pgbouncer`` binary on a free loopback
port and returns a ``PgBouncer`` whose ``host``/``port`` replace the server's in
``PIPELINES_PG_*``. ``pgbouncer`` is the fixture (session pooling, function scope); tests skip
with the install line when the binary is missing (``apt-get install -y pgbouncer``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from pipelines_tests.services import PostgresServer, _free_port, _run_as

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((p for p in BINARY_PATHS if Path(p).exists()), None)


@dataclass
class PgBouncer:
    """A running PgBouncer; ``logins()`` counts client logins it accepted so far."""

    host: str
    port: int
    server: PostgresServer = field(repr=False)
    base_dir: Path = field(repr=False)
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def log_file(self) -> Path:
        return self.base_dir / "pgbouncer.log"

    def connect(self, database: str) -> Any:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.server.user,
            password=self.server.password,
            dbname=database,
        )

    def admin(self, command: str) -> list[dict[str, Any]]:
        """A ``SHOW …`` command on PgBouncer's admin console, rows as dicts."""
        con = self.connect("pgbouncer")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(command)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            con.close()

    def logins(self, database: str | None = None) -> int:
        """Client connections accepted (``login attempt`` lines of the log), for one database or all."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        lines = [line for line in text.splitlines() if "login attempt:" in line]
        if database is not None:
            lines = [line for line in lines if f"db={database} " in line]
        return len(lines)


def start_pgbouncer(server: PostgresServer, pool_mode: str = "session") -> PgBouncer:
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install -y pgbouncer)")
    account = _run_as()  # like PostgreSQL, PgBouncer refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="pipelines-pgbouncer-"))
    port = _free_port()
    # SCRAM towards the server needs the plain password here; the file is the test's own.
    (base / "userlist.txt").write_text(f'"{server.user}" "{server.password}"\n')
    (base / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {base / "userlist.txt"}
admin_users = {server.user}
pool_mode = {pool_mode}
default_pool_size = 20
max_client_conn = 500
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits,options,search_path
logfile = {base / "pgbouncer.log"}
pidfile = {base / "pgbouncer.pid"}
log_connections = 1
log_disconnections = 1
"""
    )
    kwargs: dict[str, Any] = {}
    if account is not None:
        for path in (base, *base.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    os.chmod(base / "userlist.txt", 0o600)
    proc = subprocess.Popen(
        [binary, str(base / "pgbouncer.ini")],
        # its log goes to logfile; an unread pipe would fill up and block PgBouncer
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,
    )
    bouncer = PgBouncer("127.0.0.1", port, server, base, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            bouncer.admin("SHOW VERSION")
            return bouncer
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_pgbouncer(bouncer)
                log = (
                    bouncer.log_file.read_text(errors="replace")[-2000:] if bouncer.log_file.exists() else ""
                )
                raise RuntimeError(f"pgbouncer did not start: {log}") from None
            time.sleep(0.1)


def stop_pgbouncer(bouncer: PgBouncer) -> None:
    if bouncer.proc.poll() is None:
        bouncer.proc.terminate()
        try:
            bouncer.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bouncer.proc.kill()
            bouncer.proc.wait(timeout=10)
    shutil.rmtree(bouncer.base_dir, ignore_errors=True)


def bouncer_or_skip(server: PostgresServer, pool_mode: str) -> PgBouncer:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed: apt-get install -y pgbouncer (Debian package)")
    return start_pgbouncer(server, pool_mode)


@pytest.fixture
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in session pooling mode in front of ``postgres_server``."""
    bouncer = bouncer_or_skip(postgres_server, "session")
    try:
        yield bouncer
    finally:
        stop_pgbouncer(bouncer)


@pytest.fixture
def pgbouncer_transaction(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode: what breaks session-level advisory locks."""
    bouncer = bouncer_or_skip(postgres_server, "transaction")
    try:
        yield bouncer
    finally:
        stop_pgbouncer(bouncer)
