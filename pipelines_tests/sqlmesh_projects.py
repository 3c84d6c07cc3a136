"""Small SQLMesh projects written into a temp dir, for engine tests that need exact control."""

from __future__ import annotations

from pathlib import Path

# DuckDB warehouse + state; bench/generate_project.py writes its projects with it too
CONFIG = """\
gateways:
  local:
    connection:
      type: duckdb
      database: {db}
    state_connection:
      type: duckdb
      database: {state}
default_gateway: local
model_defaults:
  dialect: duckdb
  start: '2026-01-01'
  cron: '@daily'
"""

DAILY_SOURCE = """\
MODEL (
  name demo.daily_source,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  owner 'team:tests',
  description 'One row per day and id, generated for the interval',
  audits (not_null(columns := (ds, id)))
);
SELECT d::DATE AS ds, i AS id, i * 10 AS amount
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), range(3) AS r(i)
"""

DAILY_TOTALS = """\
MODEL (
  name demo.daily_totals,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  audits (unique_values(columns := (ds)){extra_audits})
);
SELECT ds, sum(amount)::BIGINT AS total, count(*)::BIGINT AS n
FROM demo.daily_source
WHERE ds BETWEEN @start_date AND @end_date
GROUP BY ds
"""

BROKEN = """\
MODEL (
  name demo.broken,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds)
);
SELECT ds, CAST(error('boom: this model is broken on purpose') AS BIGINT) AS x
FROM demo.daily_source
WHERE ds BETWEEN @start_date AND @end_date
"""

AFTER_BROKEN = """\
MODEL (
  name demo.after_broken,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds)
);
SELECT ds, x FROM demo.broken WHERE ds BETWEEN @start_date AND @end_date
"""

SNAPSHOT = """\
MODEL (
  name demo.summary,
  kind FULL,
  description 'Whole-table summary of the daily totals'
);
SELECT count(*)::BIGINT AS days, sum(total)::BIGINT AS total FROM demo.daily_totals
"""


def write_project(
    root: Path,
    *,
    broken: bool = False,
    failing_audit: str | None = None,
    summary: bool = True,
) -> Path:
    """A project under ``root/project`` with its DuckDB files under ``root/db``.

    ``failing_audit`` is ``"blocking"`` or ``"non_blocking"`` to add an audit on
    ``daily_totals`` that always fails.
    """
    project = root / "project"
    (project / "models").mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir(exist_ok=True)
    (project / "config.yaml").write_text(
        CONFIG.format(db=root / "db" / "warehouse.duckdb", state=root / "db" / "state.duckdb")
    )
    (project / "models" / "daily_source.sql").write_text(DAILY_SOURCE)
    extra = ""
    if failing_audit == "blocking":
        extra = ",\n    accepted_range(column := total, min_v := 1000000)"
    elif failing_audit == "non_blocking":
        extra = ",\n    accepted_range_non_blocking(column := total, min_v := 1000000)"
    (project / "models" / "daily_totals.sql").write_text(DAILY_TOTALS.format(extra_audits=extra))
    if summary:
        (project / "models" / "summary.sql").write_text(SNAPSHOT)
    if broken:
        (project / "models" / "broken.sql").write_text(BROKEN)
        (project / "models" / "after_broken.sql").write_text(AFTER_BROKEN)
    return project
