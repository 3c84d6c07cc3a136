"""The property test of ``test_prop_replay.py`` on the production stack (slow).

Both sides run the generated project on DuckDB with a DuckLake catalog in PostgreSQL and data on
the S3 server over HTTP, SQLMesh's state in PostgreSQL; each side has its own state database,
catalog database and S3 prefix. Dagster's run and event storage is PostgreSQL too, and the code
location runs as ``PIPELINES_ENV=prod`` (no lock file: runs concurrent, plans under the
PostgreSQL plan lock), as ``test_prod_stack.py`` sets it up. Listed in ``.ci/prod-stack``.

Run: ``uv run pytest -m slow pipelines_tests/test_prop_replay_prod.py -s`` (``PROP_SEQUENCES``,
``PROP_STEPS``, ``PROP_SEED`` as in ``test_prop_replay.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipelines_tests import prop_project as pp
from pipelines_tests.prod_env import build_prod_env, postgres_instance, prod_environment
from pipelines_tests.prop_harness import Bare, Ours
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.test_prop_replay import assert_all_agree, play_many, size


@dataclass
class ProdSides:
    """``make(n)``: ours and bare projects of sequence ``n``, each with its own PostgreSQL state
    and DuckLake catalog databases and its own prefix in the S3 bucket."""

    root: Path
    instance: dg.DagsterInstance
    server: PostgresServer
    s3: S3Env

    def make(self, n: int) -> tuple[Ours, Bare, list[str]]:
        days = pp.closed_days()
        made = []
        for name in ("ours", "bare"):
            gateway = pp.PROD_GATEWAY.format(
                catalog_dsn=self.server.dsn(self.server.create_database()),
                data_path=self.s3.uri(f"{name}{n}") + "/",
                s3_endpoint=self.s3.endpoint_url.split("://", 1)[1],
                host=self.server.host,
                port=self.server.port,
                user=self.server.user,
                password=self.server.password,
                state_db=self.server.create_database(),
            )
            made.append(pp.write_project(self.root / f"{name}{n}", gateway, days[0]))
        return Ours(made[0], self.instance, days), Bare(made[1]), days


@pytest.fixture
def prod_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[ProdSides]:
    from pipelines.platform.duckdb_extensions import install_extensions

    install_extensions()  # the gateway's extensions, from the pinned wheels (offline)
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = build_prod_env(postgres_server, s3_env, tmp_path, dbs)
    with (
        prod_environment(monkeypatch, env),
        postgres_instance(tmp_path, postgres_server, dbs["dagster"]) as instance,
    ):
        yield ProdSides(tmp_path, instance, postgres_server, s3_env)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_random_steps_on_the_prod_stack(prod_sides: ProdSides) -> None:
    assert_all_agree(play_many(prod_sides.make, *size(3, 8, 1000)))
