"""The profile history is shared by every run pod: a table in the warehouse's own catalog.

On the prod stack (DuckLake catalog in PostgreSQL, data on S3) pods with separate local data
directories judge and record partitions at the same time; together they leave one history, and
a fresh pod leaves warm-up once seven partitions are recorded, whichever pods recorded them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dagster_sqlmesh_bridge.quality.checks import run_profile_checks
from dagster_sqlmesh_bridge.quality.history import TABLE as HISTORY
from dagster_sqlmesh_bridge.quality.history import ProfileStore
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import warehouse
from pipelines_tests.prod_env import build_prod_env, prod_environment
from pipelines_tests.services import PostgresServer, S3Env
from pipelines_tests.test_quality import RULE, SCHEMA, day, orders_on, write_day

ASSET = "marts/fct_orders"


@pytest.fixture
def prod_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> Iterator[None]:
    dbs = {name: postgres_server.create_database() for name in ("sqlmesh", "ducklake", "shop")}
    with prod_environment(monkeypatch, build_prod_env(postgres_server, s3_env, tmp_path, dbs)):
        yield


def pod(tmp_path: Path, name: str) -> Settings:
    """The settings a run pod has: the shared prod stack, a local data dir of its own."""
    return Settings.from_env({**os.environ, "PIPELINES_DATA_DIR": str(tmp_path / name)})


def judge(settings: Settings, partitions: list[str], run_id: str) -> dict[str, object]:
    with warehouse(settings, read_only=False) as con:
        results = run_profile_checks(RULE, partitions, con, run_id=run_id)
    return {r.check_name: r for r in results}


def test_pods_with_separate_data_dirs_share_one_history(prod_stack: None, tmp_path: Path) -> None:
    first = pod(tmp_path, "pod-a")
    assert first.env == "prod"
    with warehouse(first, read_only=False) as con:
        con.execute(SCHEMA)
        for i in range(9):
            write_day(con, day(i), multiplier=10 if i == 8 else 1)

    # two pods at once, on overlapping ranges: both append, neither fails
    pods = [pod(tmp_path, "pod-b"), pod(tmp_path, "pod-c")]
    ranges = [[day(i).isoformat() for i in range(0, 5)], [day(i).isoformat() for i in range(2, 7)]]
    barrier, errors = threading.Barrier(2), []

    def run(settings: Settings, partitions: list[str], run_id: str) -> None:
        try:
            barrier.wait()
            verdicts = judge(settings, partitions, run_id)
            assert all(v.passed for v in verdicts.values())  # type: ignore[attr-defined]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(settings, partitions, f"run-{i}"))
        for i, (settings, partitions) in enumerate(zip(pods, ranges, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    # one history: every partition once for readers, whichever pod wrote it (some twice)
    with warehouse(first, read_only=True) as con:
        stored = con.execute(f"SELECT count(DISTINCT batch_id) FROM {HISTORY} WHERE asset_key = ?", [ASSET])
        assert stored.fetchone() == (10,)  # 5 + 5 profiles appended, days 2-4 by both pods
        points = ProfileStore(con).history(ASSET, before="2026-12-31")
    assert [p.partition for p in points] == [day(i).isoformat() for i in range(7)]
    assert [p.row_count for p in points] == [orders_on(day(i)) for i in range(7)]

    # a third pod, its data dir empty, judges day 8 against the 7 days the others recorded
    fresh = pod(tmp_path, "pod-d")
    verdicts = judge(fresh, [day(7).isoformat()], "run-3")
    volume = verdicts["volume_anomaly"]
    assert volume.passed and not volume.metadata["in_warmup"].value  # type: ignore[attr-defined]
    assert volume.metadata["history_points"].value == 7  # type: ignore[attr-defined]
    spike = judge(pod(tmp_path, "pod-e"), [day(8).isoformat()], "run-4")["volume_anomaly"]
    assert not spike.passed  # type: ignore[attr-defined]
    # nothing was kept on any pod's local disk
    for name in ("pod-a", "pod-b", "pod-c", "pod-d", "pod-e"):
        local = tmp_path / name
        assert not local.exists() or not list(local.rglob("*.duckdb")), list(local.rglob("*"))


def test_newest_profile_of_a_partition_wins(tmp_path: Path) -> None:
    """The history's reader takes the newest profile of a partition (append-only store)."""
    import duckdb

    from dagster_sqlmesh_bridge.quality.profile import profile_partitions

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute(SCHEMA)
    write_day(con, day(0))
    store = ProfileStore(con)
    store.record(ASSET, profile_partitions(con, RULE.table, "order_date", [day(0).isoformat()]).values())
    write_day(con, day(0), multiplier=3)
    store.record(ASSET, profile_partitions(con, RULE.table, "order_date", [day(0).isoformat()]).values())
    [point] = store.history(ASSET, before="2026-12-31")
    assert point.row_count == orders_on(day(0), 3)
    rule = replace(RULE, warmup=1)
    write_day(con, day(1), multiplier=10)
    [volume] = run_profile_checks(rule, [day(1).isoformat()], con, selected=["volume_anomaly"])
    assert not volume.passed and volume.metadata["history_points"].value == 1
    con.close()


@pytest.mark.slow
def test_a_prod_run_records_its_profiles_in_the_ducklake_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> None:
    """The SQLMesh step writes the history through its own DuckLake connection; the run's check
    steps judge those profiles (no second profile query), from another pod's point of view."""
    from pipelines_tests.conftest import check_results
    from pipelines_tests.prod_env import postgres_instance

    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    env = build_prod_env(postgres_server, s3_env, tmp_path, dbs)
    with (
        prod_environment(monkeypatch, env),
        postgres_instance(tmp_path, postgres_server, dbs["dagster"]) as instance,
    ):
        from pipelines_tests.conftest import Deployment

        deployment = Deployment(tmp_path, Settings.from_env(), instance)
        result = deployment.run("*", start="2026-04-06", end="2026-04-07")
        assert result.success
        with warehouse(pod(tmp_path, "another-pod"), read_only=True) as con:
            runs = con.execute(
                f"SELECT DISTINCT run_id FROM {HISTORY} WHERE asset_key = 'marts/daily_revenue'"
            ).fetchall()
            points = ProfileStore(con).history("marts/daily_revenue", before="2026-12-31")
    assert runs == [(result.run_id,)]  # recorded once, by the SQLMesh step, reused by the check
    assert [p.partition for p in points] == ["2026-04-06", "2026-04-07"]
    volume = check_results(result)[("marts/daily_revenue", "volume_anomaly")]
    assert volume.passed and volume.metadata["in_warmup"].value
