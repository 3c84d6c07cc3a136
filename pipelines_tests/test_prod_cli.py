"""``pipelines run``: an operator's range run on whatever stack the environment names.

In prod it runs on the instance of ``deploy/dagster-prod.yaml`` (PostgreSQL storage, S3 compute
logs) from outside the cluster, and prints where the data is: S3 and the DuckLake catalog, never a
local warehouse path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.ops.cli import data_locations
from pipelines.platform.settings import Settings
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-04-06"


def test_prod_locations_name_s3_and_the_catalog_not_a_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PIPELINES_ENV", "prod")
    monkeypatch.setenv("PIPELINES_LAKE_URI", "s3://acme-lake/prod")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_PG_HOST", "aurora.internal")
    monkeypatch.setenv("PIPELINES_PG_PASSWORD", "pw-not-printed")
    shown = dict(data_locations(Settings.from_env()))
    text = " ".join(shown.values())
    assert shown["warehouse data files"] == "s3://acme-lake/prod/warehouse/"
    assert "postgres://aurora.internal:5432/ducklake (sslmode=require)" in text
    assert str(tmp_path) not in text and "warehouse.duckdb" not in text and "pw-not-printed" not in text


@pytest.mark.slow
def test_run_on_the_prod_instance_from_outside_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> None:
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = build_prod_env(postgres_server, s3_env, tmp_path, dbs)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # the deployment's file as is, but for TLS: the test server has none (test_prod_config has it)
    config = (REPO / "deploy" / "dagster-prod.yaml").read_text()
    assert "sslmode: require" in config
    (home / "dagster.yaml").write_text(config.replace("sslmode: require", "sslmode: prefer"))
    with prod_environment(monkeypatch, env):
        run_env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": postgres_server.host,
            "DAGSTER_PG_PORT": str(postgres_server.port),
            "DAGSTER_PG_USERNAME": postgres_server.user,
            "DAGSTER_PG_PASSWORD": postgres_server.password,
            "DAGSTER_PG_DB": dbs["dagster"],
            "DAGSTER_COMPUTE_LOGS_BUCKET": s3_env.bucket,
            "DAGSTER_COMPUTE_LOGS_PREFIX": "lake/dagster-logs",
            "DAGSTER_K8S_NAMESPACE": "dagster",
        }
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.ops.cli", "run", "--start", DAY, "--end", DAY, "--select",
             "key:raw/fx_rates or key:raw/orders"],
            env=run_env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "succeeded" in out.stdout
    assert s3_env.uri("lake") in out.stdout and "DuckLake catalog" in out.stdout
    assert "warehouse.duckdb" not in out.stdout
    # the run is in the prod instance's PostgreSQL storage, as a UI-launched run would be
    con = postgres_server.connect(dbs["dagster"])
    try:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
            assert cur.fetchone()[0] == 1
    finally:
        con.close()
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket)["Contents"]]
    assert f"lake/raw/fx_rates/ds={DAY}/data.parquet" in keys


def test_another_projects_locations_are_its_own_gateways(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A project with its own gateway (`sqlmesh init duckdb`: `database: db.db`) writes there,
    not to the shop's warehouse, and has no shop report: the run's summary says so, with a
    relative file resolved the way the runs open it (against the project folder, as `sqlmesh` run
    there does, not the working directory) and a catalog reached over PostgreSQL named without
    its password."""
    projects: list[Path] = []

    def locations(connection: str) -> dict[str, str]:
        project = tmp_path / f"team_project_{len(list(tmp_path.iterdir()))}"
        projects.append(project)
        (project / "models").mkdir(parents=True)
        monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))
        (project / "config.yaml").write_text(
            f"gateways:\n  local:\n    connection:\n{connection}"
            "default_gateway: local\nmodel_defaults:\n  dialect: duckdb\n"
        )
        return dict(data_locations(Settings.from_env()))

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    shown = locations("      type: duckdb\n      database: db.db\n")
    assert shown["warehouse (project gateway)"] == str(projects[-1] / "db.db")
    assert "report" not in shown and "warehouse (DuckDB)" not in shown
    shown = locations(
        "      type: duckdb\n"
        "      catalogs:\n"
        "        lake:\n"
        "          type: ducklake\n"
        "          path: 'postgres:host=pg password=pw-not-printed dbname=lake'\n"
        "          data_path: s3://team-lake/data/\n"
        "        side: side.duckdb\n"
    )
    side = projects[-1] / "side.duckdb"
    assert shown["warehouse (project gateway)"] == f"lake: ducklake catalog, side: {side}"
    assert "pw-not-printed" not in " ".join(shown.values())
