"""``pipelines bootstrap-db``: the three metadata databases and their least-privilege roles.

Run once per deployment (and again after a password change: it is idempotent) as the Aurora
admin user, from the Kubernetes Job in ``deploy/bootstrap-db-job.yaml`` or a shell:

* ``dagster`` owns the Dagster storage database, and can connect to nothing else;
* ``pipelines`` owns the SQLMesh state and DuckLake catalog databases (SQLMesh and DuckLake
  create their own tables there on first use);
* ``data_api`` may connect to the DuckLake catalog and read it, nothing more (the read-only API).

Passwords come from the environment only (the Job takes them from the stack's secrets); nothing
is printed but names. Names default to what ``helm-values.yaml`` and ``infra/stack.py`` use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2 import sql

from dagster_sqlmesh_bridge.identifiers import safe_identifier


class BootstrapError(ValueError):
    """A setting the bootstrap needs is missing or not usable."""


@dataclass(frozen=True)
class Role:
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BootstrapPlan:
    """Who owns what. Built from the environment by :meth:`from_env`."""

    host: str
    port: int
    admin_user: str
    admin_password: str = field(repr=False)
    sslmode: str = "require"
    dagster: Role = field(default_factory=lambda: Role("dagster", ""))
    pipelines: Role = field(default_factory=lambda: Role("pipelines", ""))
    data_api: Role = field(default_factory=lambda: Role("data_api", ""))
    dagster_db: str = "dagster"
    sqlmesh_db: str = "sqlmesh"
    ducklake_db: str = "ducklake"
    ducklake_schema: str = "main"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BootstrapPlan:
        env = dict(os.environ if environ is None else environ)

        def need(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise BootstrapError(f"{name} is not set (bootstrap-db reads passwords from the environment)")
            return value

        def ident(name: str, default: str) -> str:
            return safe_identifier(env.get(name, "").strip() or default, name)

        return cls(
            host=need("BOOTSTRAP_PG_HOST"),
            port=int(env.get("BOOTSTRAP_PG_PORT", "") or 5432),
            admin_user=need("BOOTSTRAP_PG_ADMIN_USER"),
            admin_password=need("BOOTSTRAP_PG_ADMIN_PASSWORD"),
            sslmode=env.get("BOOTSTRAP_PG_SSLMODE", "") or "require",
            dagster=Role(ident("DAGSTER_PG_USERNAME", "dagster"), need("DAGSTER_PG_PASSWORD")),
            pipelines=Role(ident("PIPELINES_PG_USER", "pipelines"), need("PIPELINES_PG_PASSWORD")),
            data_api=Role(ident("DATA_API_PG_USER", "data_api"), need("DATA_API_PG_PASSWORD")),
            dagster_db=ident("DAGSTER_PG_DB", "dagster"),
            sqlmesh_db=ident("PIPELINES_SQLMESH_STATE_DB", "sqlmesh"),
            ducklake_db=ident("PIPELINES_DUCKLAKE_DB", "ducklake"),
            ducklake_schema=ident("PIPELINES_DUCKLAKE_SCHEMA", "main"),
        )

    def databases(self) -> dict[str, Role]:
        """Each database and the role that owns it."""
        return {
            self.dagster_db: self.dagster,
            self.sqlmesh_db: self.pipelines,
            self.ducklake_db: self.pipelines,
        }


@contextmanager
def _admin(plan: BootstrapPlan, database: str) -> Iterator[Any]:
    con = psycopg2.connect(
        host=plan.host,
        port=plan.port,
        user=plan.admin_user,
        password=plan.admin_password,
        dbname=database,
        sslmode=plan.sslmode,
        connect_timeout=10,
        application_name="pipelines-bootstrap",
    )
    con.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with con.cursor() as cur:
            yield cur
    finally:
        con.close()


def _ensure_role(cur: Any, role: Role, admin_is_superuser: bool) -> str:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(
        sql.SQL("{} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role.name), sql.Literal(role.password)
        )
    )
    if not admin_is_superuser:
        # Aurora's admin is no superuser: it must be a member to make the role own databases.
        cur.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role.name)))
    return "created" if verb == "CREATE" else "updated"


def bootstrap(plan: BootstrapPlan) -> dict[str, Any]:
    """Create or update roles, databases and grants; safe to run any number of times."""
    report: dict[str, Any] = {"roles": {}, "databases": {}}
    roles = (plan.dagster, plan.pipelines, plan.data_api)
    with _admin(plan, "postgres") as cur:
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        superuser = bool(cur.fetchone()[0])
        for role in roles:
            report["roles"][role.name] = _ensure_role(cur, role, superuser)
        for database, owner in plan.databases().items():
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            db, who = sql.Identifier(database), sql.Identifier(owner.name)
            if cur.fetchone():
                cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, who))
                report["databases"][database] = "exists"
            else:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, who))
                report["databases"][database] = "created"
            # Only the owner (and the API on the catalog) may connect.
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            for other in roles:
                if other is not owner:
                    cur.execute(
                        sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, sql.Identifier(other.name))
                    )
        cur.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(plan.ducklake_db), sql.Identifier(plan.data_api.name)
            )
        )
    for database, owner in plan.databases().items():
        with _admin(plan, database) as cur:
            cur.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            cur.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(owner.name)))
    with _admin(plan, plan.ducklake_db) as cur:
        schema, owner, reader = (
            sql.Identifier(plan.ducklake_schema),
            sql.Identifier(plan.pipelines.name),
            sql.Identifier(plan.data_api.name),
        )
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(schema, owner))
        cur.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, owner))
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reader))
        cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, reader))
        # Tables DuckLake creates later (as `pipelines`) are readable by the API too.
        cur.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                owner, schema, reader
            )
        )
    return report
