"""Shared fixtures: an isolated embedded-default deployment per test, and helpers to run it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipelines.platform.settings import Settings
from pipelines_tests.prod_env import build_prod_env, postgres_instance, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

pytest_plugins = ["pipelines_tests.services", "pipelines_tests.warehouse_fixture", "pipelines_tests.pooler"]

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class Deployment:
    """An embedded-default deployment in a temp dir, with its Dagster instance."""

    root: Path
    settings: Settings
    instance: dg.DagsterInstance

    def definitions(self) -> dg.Definitions:
        from pipelines.definitions import build_definitions

        return build_definitions(Settings.from_env())

    def run(
        self,
        selection: str | list[dg.AssetKey] = "*",
        start: str | None = None,
        end: str | None = None,
        run_config: dict | None = None,
        defs: dg.Definitions | None = None,
    ) -> dg.ExecuteInProcessResult:
        """One run of ``selection`` (for the partition range [start, end] when given)."""
        defs = defs or self.definitions()
        job = dg.define_asset_job("test_run", selection=selection)
        job_def = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("test_run")
        tags = {RANGE_START: start, RANGE_END: end or start} if start else {}
        return job_def.execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config, raise_on_error=False
        )


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("SQLMESH_PROJECT_DIR", raising=False)
    monkeypatch.delenv("SQLMESH_GATEWAY", raising=False)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield Deployment(tmp_path, Settings.from_env(), instance)


@pytest.fixture
def ephemeral_instance() -> Iterator[dg.DagsterInstance]:
    """An in-memory instance, disposed when the test ends (not whenever it is collected)."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {e.asset_key for e in result.get_asset_materialization_events()}


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            out[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = evaluation
    return out


@pytest.fixture
def prod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[Deployment]:
    """The production stack (PostgreSQL for Dagster, SQLMesh state and DuckLake; S3 for data)."""
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = build_prod_env(postgres_server, s3_env, tmp_path, dbs)
    with (
        prod_environment(monkeypatch, env),
        postgres_instance(tmp_path, postgres_server, dbs["dagster"]) as instance,
    ):
        yield Deployment(tmp_path, Settings.from_env(), instance)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-skips",
        action="store_true",
        help="a skipped test fails (CI's prod-stack job: a missing PostgreSQL or PgBouncer is an error)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.config.getoption("--no-skips") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under --no-skips: {reason}"
