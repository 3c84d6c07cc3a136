"""A real PgBouncer in front of the test PostgreSQL, as RDS Proxy sits in front of Aurora.

``start_pgbouncer(server, pool_mode)`` writes a generated config (wildcard database, SCRAM
logins, the server's own user as admin), starts Debian's ``pgbouncer`` binary on a free loopback
port and returns a ``PgBouncer`` whose ``host``/``port`` replace the server's in
``PIPELINES_PG_*``. ``pgbouncer`` is the fixture (session pooling, function scope); tests skip
with the install line when the binary is missing (``apt-get install -y pgbouncer``).

``start_sidecar(server)`` runs the production sidecar instead (helm-values.yaml's ConfigMap
``pipelines-pgbouncer``: its ``pgbouncer.ini`` and ``entrypoint.sh``, unchanged but for the
upstream, the port and the file paths): logins on the loopback without key derivation, SCRAM
logins from the pooler to the server, as a pod's sidecar does.
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
import yaml

from pipelines_tests.services import PostgresServer, _free_port, _run_as

BINARY_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
HELM_VALUES = Path(__file__).resolve().parents[1] / "helm-values.yaml"
SIDECAR_CONFIGMAP = "pipelines-pgbouncer"


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
    proc: subprocess.Popen[bytes] | None = field(repr=False)

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
    os.chmod(base / "userlist.txt", 0o600)
    return _launch(
        PgBouncer("127.0.0.1", port, server, base, None), [binary, str(base / "pgbouncer.ini")], {}
    )


def sidecar_files() -> dict[str, str]:
    """The production sidecar's files (``pgbouncer.ini``, ``entrypoint.sh``) from helm-values.yaml."""
    values = yaml.safe_load(HELM_VALUES.read_text())
    (config_map,) = [
        m
        for m in values.get("extraManifests") or []
        if m.get("kind") == "ConfigMap" and m["metadata"]["name"] == SIDECAR_CONFIGMAP
    ]
    return dict(config_map["data"])


def rewrite_ini(ini: str, databases: list[str], settings: dict[str, str]) -> str:
    """``ini`` with its ``[databases]`` replaced and the ``[pgbouncer]`` keys in ``settings`` set."""
    out: list[str] = []
    section, pending = "", dict(settings)
    for line in ini.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
            out.append(line)
            if section == "[databases]":
                out.extend(databases)
            continue
        if section == "[databases]" and stripped and not stripped.startswith(";"):
            continue
        key = stripped.split("=", 1)[0].strip()
        if section == "[pgbouncer]" and "=" in stripped and key in pending:
            out.append(f"{key} = {pending.pop(key)}")
            continue
        out.append(line)
    return "\n".join(out + [f"{k} = {v}" for k, v in pending.items()]) + "\n"


def start_sidecar(server: PostgresServer, server_tls_sslmode: str = "prefer") -> PgBouncer:
    """The production PgBouncer sidecar in front of ``server``: every database of the server, the
    server's own user (its password reaches the entrypoint through the environment, as the secret
    does in a pod), a free loopback port, login lines in a log file to count client logins.
    ``server_tls_sslmode``: the test server has no TLS (production requires it)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install -y pgbouncer)")
    files = sidecar_files()
    base = Path(tempfile.mkdtemp(prefix="pipelines-sidecar-"))
    port = _free_port()
    ini = rewrite_ini(
        files["pgbouncer.ini"],
        [f"* = host={server.host} port={server.port}"],
        {
            "listen_port": str(port),
            "auth_file": str(base / "userlist.txt"),
            "server_tls_sslmode": server_tls_sslmode,
            "logfile": str(base / "pgbouncer.log"),
            "log_connections": "1",
            "admin_users": server.user,  # SHOW commands in the tests
        },
    )
    (base / "pgbouncer.ini").write_text(ini)
    (base / "entrypoint.sh").write_text(files["entrypoint.sh"])
    env = {
        "PATH": f"{Path(binary).parent}:/usr/bin:/bin",
        "PGBOUNCER_RUN_DIR": str(base),
        "PGBOUNCER_CONF": str(base / "pgbouncer.ini"),
    }
    for prefix in ("DAGSTER_PG", "PIPELINES_PG", "SHOP_DB"):
        env[f"{prefix}_USER"], env[f"{prefix}_PASSWORD"] = server.user, server.password
    return _launch(
        PgBouncer("127.0.0.1", port, server, base, None), ["/bin/sh", str(base / "entrypoint.sh")], env
    )


def _launch(bouncer: PgBouncer, argv: list[str], env: dict[str, str]) -> PgBouncer:
    """Start ``argv`` (PgBouncer, or the sidecar's entrypoint) as an unprivileged account, wait
    until its admin console answers."""
    account = _run_as()  # like PostgreSQL, PgBouncer refuses to run as root
    base = bouncer.base_dir
    kwargs: dict[str, Any] = {}
    if account is not None:
        for path in (base, *base.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    bouncer.proc = subprocess.Popen(
        argv,
        # its log goes to logfile; an unread pipe would fill up and block PgBouncer
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env or None,
        **kwargs,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            bouncer.admin("SHOW VERSION")
            return bouncer
        except psycopg2.OperationalError:
            if bouncer.proc.poll() is not None or time.monotonic() > deadline:
                stop_pgbouncer(bouncer)
                log = (
                    bouncer.log_file.read_text(errors="replace")[-2000:] if bouncer.log_file.exists() else ""
                )
                raise RuntimeError(f"pgbouncer did not start: {log}") from None
            time.sleep(0.1)


def stop_pgbouncer(bouncer: PgBouncer) -> None:
    if bouncer.proc is not None and bouncer.proc.poll() is None:
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
