"""Materialization and check events stay the same size whatever the run's range (issue 20,
item 4; issue 17).

Dagster copies a ranged run's materialization metadata onto every partition's event, so a
profile that listed every partition made a backfill's event log grow with the square of its
length. The profile hook now returns the run's totals once; per-partition figures are in the
shared history table.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest

from dagster_sqlmesh_bridge.quality.history import ProfileStore
from pipelines.platform.warehouse import warehouse
from pipelines_tests.conftest import Deployment, check_results
from pipelines_tests.sqlmesh_projects import write_project

SOURCE = dg.AssetKey(["demo", "daily_source"])


def event_sizes(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    """Serialized metadata size of each partition's materialization of ``SOURCE``."""
    return {
        e.partition: len(dg.serialize_value(e.materialization.metadata))
        for e in result.get_asset_materialization_events()
        if e.asset_key == SOURCE and e.partition
    }


def use_project(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    project = write_project(deployment.root, summary=False)
    # the warehouse where the deployment's checks and history look for it
    config = project / "config.yaml"
    config.write_text(
        config.read_text().replace(
            str(deployment.root / "db" / "warehouse.duckdb"),
            str(deployment.settings.data_dir / "warehouse.duckdb"),
        )
    )
    deployment.settings.data_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SQLMESH_PROJECT_DIR", str(project))


def test_event_metadata_does_not_grow_with_the_range(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_project(deployment, monkeypatch)
    selection = dg.AssetSelection.assets(SOURCE).without_checks()
    short = deployment.run(selection, start="2026-01-01", end="2026-01-03")  # type: ignore[arg-type]
    assert short.success
    first = date(2026, 2, 1)
    last = first + timedelta(days=59)
    long = deployment.run(selection, start=first.isoformat(), end=last.isoformat())  # type: ignore[arg-type]
    assert long.success
    small, large = event_sizes(short), event_sizes(long)
    assert len(small) == 3 and len(large) == 60
    # every event of the 60-day run is as large as one of the 3-day run, give or take digits
    assert max(large.values()) - min(small.values()) < 64, (small, large)
    summary = next(iter(long.get_asset_materialization_events())).materialization.metadata["profile"].value
    assert summary["partitions"] == 60 and summary["row_count"] == 180
    assert summary["first_partition"] == first.isoformat() and summary["last_partition"] == last.isoformat()
    # the per-partition figures are in the history, once each
    with warehouse(deployment.settings, read_only=True) as con:
        points = ProfileStore(con).history("demo/daily_source", before="2026-12-31", limit=100)
    assert len(points) == 63 and {p.row_count for p in points} == {3}


def test_check_metadata_does_not_grow_with_the_range(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check judging 60 partitions records counts and the failing ones, not every verdict."""
    use_project(deployment, monkeypatch)
    selection = dg.AssetSelection.assets(SOURCE)
    short = deployment.run(selection, start="2026-01-01", end="2026-01-30")  # type: ignore[arg-type]
    long = deployment.run(selection, start="2026-02-01", end="2026-04-01")  # type: ignore[arg-type]
    assert short.success and long.success
    for check in ("volume_anomaly", "null_drift"):
        small = check_results(short)[("demo/daily_source", check)]
        large = check_results(long)[("demo/daily_source", check)]
        assert small.passed and large.passed
        assert large.metadata["partitions_judged"].value == 60
        assert large.metadata["last_partition"].value == "2026-04-01"
        assert large.metadata["partitions_failed"].value == 0
        sizes = [len(dg.serialize_value(e.metadata)) for e in (small, large)]
        assert abs(sizes[1] - sizes[0]) < 128, sizes  # 30 more verdicts would be ~6 kB
