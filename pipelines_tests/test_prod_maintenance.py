"""The warehouse stays bounded and whole on the prod stack (embedded PostgreSQL + S3 server).

Every restatement leaves DuckLake's old files on S3 (time travel); the ``warehouse_maintenance``
job expires snapshots past the retention and deletes what no live snapshot reads, after which
the objects under ``warehouse/`` are exactly the files the catalog references. The
``warehouse_file_check`` job names the model and days of a data file lost from S3.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from pipelines.platform import maintenance, warehouse
from pipelines.platform.lake import Lake
from pipelines_tests.conftest import Deployment
from pipelines_tests.prod_env import mart_fingerprints

DAYS = ["2026-04-06", "2026-04-07"]


def _storage() -> tuple[set[str], set[str], int]:
    """(keys under warehouse/ on S3, keys the catalog references, snapshots)."""
    lake = Lake(os.environ["PIPELINES_LAKE_URI"])
    with warehouse.warehouse() as con:
        referenced = {p.removeprefix(lake.uri + "/") for p in maintenance.referenced_files(con)}
        snapshots = con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()[0]
    objects = {o.key for o in lake.list("warehouse", hidden=True)}
    return objects, referenced, snapshots


def _job(prod: Deployment, name: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    job = prod.definitions().resolve_job_def(name)
    return job.execute_in_process(instance=prod.instance, run_config=run_config, raise_on_error=False)


@pytest.mark.slow
def test_maintenance_leaves_only_referenced_files_and_lost_files_are_named(
    prod: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prod.run("*", start=DAYS[0], end=DAYS[-1])
    assert first.success
    reference = mart_fingerprints()
    for _ in range(2):  # two restatements of the marts: each leaves the old files behind
        assert prod.run("key:marts/*", start=DAYS[0], end=DAYS[-1]).success
    assert mart_fingerprints() == reference
    objects, referenced, snapshots = _storage()
    print(f"before maintenance: {len(objects)} objects, {len(referenced)} referenced, {snapshots} snapshots")
    assert referenced < objects  # the restatements' old files are still there

    # the default retention (7 days) keeps everything this young
    kept = _job(prod, "warehouse_maintenance")
    assert kept.success
    assert _storage()[0] == objects

    config = {"ops": {"expire_warehouse_snapshots": {"config": {"retention_days": 0}}}}
    monkeypatch.delenv(maintenance.MAX_RUN_ENV, raising=False)
    refused = _job(prod, "warehouse_maintenance", config)  # shorter than the longest run (24 h)
    assert not refused.success and _storage()[0] == objects
    monkeypatch.setenv(maintenance.MAX_RUN_ENV, "0")  # no run in flight here
    cleaned = _job(prod, "warehouse_maintenance", config)
    assert cleaned.success
    objects, referenced, snapshots_after = _storage()
    print(f"after maintenance: {len(objects)} objects, {len(referenced)} referenced, {snapshots_after} snap.")
    assert objects == referenced
    assert snapshots_after < snapshots
    assert mart_fingerprints() == reference  # nothing live was deleted

    assert _job(prod, "warehouse_file_check").success
    lost = sorted(k for k in objects if "marts__daily_revenue__" in k and f"order_date={DAYS[1]}" in k)
    assert lost, objects
    Lake(os.environ["PIPELINES_LAKE_URI"]).delete(lost[0])
    check = _job(prod, "warehouse_file_check")
    assert not check.success
    failure = next(e for e in check.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error.message)
    assert "marts.daily_revenue" in message and DAYS[1] in message and DAYS[0] not in message


def test_maintenance_jobs_are_scheduled_stopped_and_harmless_locally(deployment: Deployment) -> None:
    defs = deployment.definitions()
    for name in ("warehouse_maintenance_daily", "warehouse_file_check_daily"):
        assert defs.resolve_schedule_def(name).default_status == dg.DefaultScheduleStatus.STOPPED
    for job in ("warehouse_maintenance", "warehouse_file_check"):  # the local DuckDB file: nothing to do
        result = defs.resolve_job_def(job).execute_in_process(
            instance=deployment.instance, raise_on_error=False
        )
        assert result.success


def test_retention_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from pipelines.platform.settings import SettingsError

    monkeypatch.delenv(maintenance.RETENTION_ENV, raising=False)
    assert maintenance.retention_from_env() == timedelta(days=7)
    monkeypatch.setenv(maintenance.RETENTION_ENV, "0.5")
    assert maintenance.retention_from_env() == timedelta(hours=12)
    for bad in ("-1", "seven", "nan"):
        monkeypatch.setenv(maintenance.RETENTION_ENV, bad)
        with pytest.raises(SettingsError, match=maintenance.RETENTION_ENV):
            maintenance.retention_from_env()


def test_physical_tables_map_back_to_models() -> None:
    assert (
        maintenance.model_of_table("sqlmesh__marts.marts__daily_revenue__1256577675") == "marts.daily_revenue"
    )
    assert maintenance.model_of_table("sqlmesh__marts.marts__daily_revenue__1256577675__dev") is None
    assert maintenance.model_of_table("main.something") is None


def test_a_retention_shorter_than_the_longest_run_is_refused_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run in flight has written files no snapshot references yet: at retention 0 the orphan
    cleanup would delete them under it. Maintenance refuses before deleting anything."""
    from datetime import timedelta

    import duckdb

    from pipelines.platform.duckdb_extensions import install_extensions
    from pipelines.platform.settings import SettingsError

    monkeypatch.delenv("PIPELINES_DUCKLAKE_SCHEMA", raising=False)
    monkeypatch.delenv(maintenance.MAX_RUN_ENV, raising=False)
    install_extensions()
    data = tmp_path / "lake" / "warehouse"
    con = duckdb.connect()
    con.execute("LOAD ducklake")
    con.execute(f"ATTACH 'ducklake:{tmp_path / 'meta.ducklake'}' AS lake (DATA_PATH '{data}/')")
    con.execute("CREATE TABLE lake.main.sales AS SELECT range AS n FROM range(10)")
    committed = set(data.rglob("*.parquet"))
    # a run in flight: its file is written, its snapshot not yet committed
    in_flight = data / "main" / "sales" / "ducklake-in-flight.parquet"
    con.execute(f"COPY (SELECT 1 AS n) TO '{in_flight}' (FORMAT parquet)")

    for retention, longest in ((timedelta(0), None), (timedelta(hours=1), timedelta(hours=2))):
        with pytest.raises(SettingsError, match=maintenance.MAX_RUN_ENV):
            maintenance.expire_and_clean(con, retention, longest)
        assert in_flight.exists()

    monkeypatch.setenv(maintenance.MAX_RUN_ENV, "bad")
    with pytest.raises(SettingsError, match=maintenance.MAX_RUN_ENV):
        maintenance.longest_run_from_env()
    monkeypatch.setenv(maintenance.MAX_RUN_ENV, "0")  # no run can be in flight: the orphan goes
    report = maintenance.expire_and_clean(con, timedelta(0))
    assert report.orphans_deleted == 1 and not in_flight.exists()
    assert set(data.rglob("*.parquet")) == committed
    assert con.execute("SELECT count(*) FROM lake.main.sales").fetchone()[0] == 10
    con.close()
