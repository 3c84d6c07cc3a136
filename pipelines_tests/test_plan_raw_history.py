"""A plan never rebuilds history whose raw days are gone (``governance/raw_history.py``).

A changed model's new version is rebuilt from the raw zone over the days its previous version
had. When a raw partition it needs is past its contract's retention, or in Glacier, the
``sqlmesh_plan`` job refuses before applying anything, naming the source and the days, and a
forward-only deployment (SQLMesh's forward-only plan) goes through instead: the model keeps its
table and history, the new logic applies to the days computed from then on. The lake is the S3
test server; the warehouse and SQLMesh state are DuckDB files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dagster_sqlmesh_bridge import SQLMeshResource
from dagster_sqlmesh_bridge.resource import PlanRefused
from pipelines.governance.raw_history import RawHistory
from pipelines.platform.lake import Lake
from pipelines_tests.services import S3Env
from pipelines_tests.sqlmesh_projects import write_project
from pipelines_tests.test_reliability_concurrency import ListLog

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
EXTERNAL = """\
- name: raw.web_events
  columns:
    ds: DATE
    n: BIGINT
"""
EVENTS_DAILY = """\
MODEL (
  name demo.events_daily,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds)
);
SELECT ds, sum(n)::BIGINT AS n FROM raw.web_events WHERE ds BETWEEN @start_date AND @end_date GROUP BY ds
"""


class Project:
    def __init__(self, root: Path, lake: Lake) -> None:
        self.dir = write_project(root, summary=False)
        (self.dir / "external_models.yaml").write_text(EXTERNAL)
        (self.dir / "models" / "events_daily.sql").write_text(EVENTS_DAILY)
        self.warehouse = root / "db" / "warehouse.duckdb"
        self.warehouse.parent.mkdir(parents=True, exist_ok=True)
        self.lake = lake
        self.resource = SQLMeshResource(project_dir=str(self.dir), lock_file=str(root / "sqlmesh.lock"))
        self.sql("CREATE SCHEMA raw; CREATE TABLE raw.web_events (ds DATE, n BIGINT)")
        for day in DAYS:
            self.add_day(day)

    def add_day(self, day: str, storage_class: str = "STANDARD") -> None:
        """A raw day as ingestion leaves it: rows in the table models read, its partition in the lake."""
        self.sql(f"INSERT INTO raw.web_events VALUES ('{day}', 1), ('{day}', 2)")
        self.lake.client.put_object(
            Bucket=self.lake.bucket,
            Key=f"{self.lake.prefix}/raw/web_events/ds={day}/data.parquet",
            Body=b"parquet",
            StorageClass=storage_class,
        )

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.warehouse))
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()

    def run(self, start: str, end: str, execution_time: str) -> None:
        ctx = self.resource.context()
        try:
            assert ctx.run("prod", start=start, end=end, execution_time=execution_time, ignore_cron=True)
        finally:
            ctx.close()

    def version(self) -> str:
        ctx = self.resource.context()
        try:
            env = ctx.state_sync.get_environment("prod")
            return next(s.version for s in env.snapshots if s.name.endswith('"events_daily"'))
        finally:
            ctx.close()

    def rows(self) -> list[tuple[str, int]]:
        return self.sql("SELECT ds::VARCHAR, n FROM demo.events_daily ORDER BY ds")


@pytest.fixture
def project(tmp_path: Path, s3_env: S3Env) -> Project:
    project = Project(tmp_path, Lake(s3_env.uri("lake")))
    project.resource.apply_plan(ListLog())  # creates prod
    project.run(DAYS[0], DAYS[-1], "2026-03-04")
    assert project.rows() == [(d, 3) for d in DAYS]
    path = project.dir / "models" / "events_daily.sql"
    path.write_text(EVENTS_DAILY.replace("sum(n)::BIGINT AS n", "(sum(n) * 10)::BIGINT AS n"))
    return project


def test_a_plan_that_would_rebuild_days_in_glacier_or_past_retention_is_refused(project: Project) -> None:
    """Day 2 is in Glacier: refused, naming it. Later, all three days are past the 90-day
    retention of web_events: refused, naming them. Nothing was applied either time."""
    project.lake.client.copy_object(  # what the lifecycle rule does to an old object
        Bucket=project.lake.bucket,
        Key=f"{project.lake.prefix}/raw/web_events/ds=2026-03-02/data.parquet",
        CopySource={
            "Bucket": project.lake.bucket,
            "Key": f"{project.lake.prefix}/raw/web_events/ds=2026-03-02/data.parquet",
        },
        StorageClass="GLACIER",
    )
    before = project.version()
    for today, expected in [
        (date(2026, 3, 10), "raw.web_events: 1 day(s) in Glacier, restore them first: 2026-03-02"),
        (
            date(2026, 6, 10),
            "raw.web_events: 3 day(s) past the contract's 90-day retention: 2026-03-01..2026-03-03",
        ),
    ]:
        log = ListLog()
        history = RawHistory(project.lake, today=today)
        with pytest.raises(PlanRefused) as refused:
            project.resource.apply_plan(log, allow_breaking=True, history=history)
        description = str(refused.value.description)
        assert "plan not applied" in description and expected in description, description
        assert "forward_only: true" in description
        assert project.version() == before
        assert project.rows() == [(d, 3) for d in DAYS]  # prod untouched
        assert not log.saw("building 1 changed model(s)")


def test_the_same_change_deployed_forward_only_keeps_history_and_applies_to_new_days(
    project: Project,
) -> None:
    """Forward-only needs no raw history: applied with the retention check on, the model keeps
    its table and days (old logic), and a new day gets the new logic."""
    before = project.version()
    log = ListLog()
    outcome = project.resource.apply_plan(
        log, forward_only=True, history=RawHistory(project.lake, today=date(2026, 6, 10))
    )
    assert [c.model for c in outcome.changes] == ["demo.events_daily"]
    assert log.saw("(forward-only)")
    assert project.version() == before  # the same table
    assert project.rows() == [(d, 3) for d in DAYS]
    project.add_day("2026-03-04")
    project.run("2026-03-04", "2026-03-04", "2026-03-05")
    assert project.rows() == [*[(d, 3) for d in DAYS], ("2026-03-04", 30)]


def test_raw_history_that_is_there_is_not_in_the_way(project: Project) -> None:
    """Every needed day present, in S3 Standard and inside retention: the plan rebuilds."""
    before = project.version()
    project.resource.apply_plan(
        ListLog(), allow_breaking=True, history=RawHistory(project.lake, today=date(2026, 3, 10))
    )
    assert project.version() != before
    assert project.rows() == [(d, 30) for d in DAYS]
