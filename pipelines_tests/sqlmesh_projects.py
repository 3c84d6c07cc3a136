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


# -- every project shape, in one compact project (pipelines_tests/test_bridge_shapes.py) -------

SHAPES_CONFIG = """\
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
  start: '2026-02-01'
  cron: '@daily'
before_all:
  - CREATE SCHEMA IF NOT EXISTS src
  - CREATE TABLE IF NOT EXISTS src.events AS SELECT 1 AS id UNION ALL SELECT 2
"""

SHAPES_FILES = {
    "models/hourly.sql": """\
MODEL (
  name shapes.hourly,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ts),
  interval_unit 'hour',
  cron '@hourly'
);
SELECT ts::TIMESTAMP AS ts, hour(ts)::INT AS h
FROM generate_series(@start_ts::TIMESTAMP, @end_ts::TIMESTAMP, INTERVAL 1 HOUR) AS t(ts)
""",
    # a string time column with a format, and a start in epoch milliseconds (2026-02-01)
    "models/daily_str.sql": """\
MODEL (
  name shapes.daily_str,
  kind INCREMENTAL_BY_TIME_RANGE (time_column (ds, '%Y-%m-%d')),
  start 1769904000000
);
SELECT strftime(ts, '%Y-%m-%d') AS ds, count(*)::BIGINT AS hours
FROM shapes.hourly
WHERE ts BETWEEN @start_ts AND @end_ts
GROUP BY 1
""",
    "models/monthly.sql": """\
MODEL (
  name shapes.monthly,
  kind INCREMENTAL_BY_TIME_RANGE (time_column month_start),
  interval_unit 'month',
  cron '@monthly'
);
SELECT @start_date::DATE AS month_start, (@end_date::DATE - @start_date::DATE + 1)::BIGINT AS days
""",
    # a relative start, as SQLMesh accepts it
    "models/recent.sql": """\
MODEL (
  name shapes.recent,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  start '1 week ago'
);
SELECT @start_date::DATE AS ds, 1 AS x
""",
    "seeds/items.csv": "id,name,price\n1,pen,2\n2,book,12\n3,mug,8\n",
    "models/items.sql": """\
MODEL (
  name shapes.items,
  kind SEED (path '../seeds/items.csv'),
  columns (id INT, name TEXT, price INT)
);
""",
    "models/cheap_items.sql": """\
MODEL (name shapes.cheap_items, kind EMBEDDED);
SELECT id, name, price FROM shapes.items WHERE price < 10
""",
    "models/cheap_count.sql": """\
MODEL (name shapes.cheap_count, kind FULL);
SELECT count(*)::BIGINT AS n FROM shapes.cheap_items
""",
    "models/items_history.sql": """\
MODEL (
  name shapes.items_history,
  kind SCD_TYPE_2_BY_COLUMN (unique_key id, columns [price])
);
SELECT id, name, price FROM shapes.items
""",
    "models/items_latest.sql": """\
MODEL (name shapes.items_latest, kind INCREMENTAL_BY_UNIQUE_KEY (unique_key id));
SELECT id, name, price FROM shapes.items
""",
    "models/py_model.py": """\
import typing as t

import pandas as pd
from sqlmesh import ExecutionContext, model


@model("shapes.py_model", kind="FULL", columns={"id": "int", "doubled": "int"})
def execute(context: ExecutionContext, **kwargs: t.Any) -> pd.DataFrame:
    table = context.resolve_table("shapes.items")
    return context.fetchdf(f"SELECT id, price * 2 AS doubled FROM {table} ORDER BY id")
""",
    "models/blueprint.sql": """\
MODEL (
  name shapes.bp_@{suffix},
  kind FULL,
  blueprints ((suffix := a, n := 1), (suffix := b, n := 2))
);
SELECT @n AS n
""",
    "signals/__init__.py": """\
import typing as t

from sqlmesh import DatetimeRanges, signal


@signal()
def always_ready(batch: DatetimeRanges) -> t.Union[bool, DatetimeRanges]:
    return True
""",
    "models/gated.sql": """\
MODEL (
  name shapes.gated,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  signals (always_ready())
);
SELECT @start_date::DATE AS ds, 'ok' AS v
""",
    "materializations/replace_all.py": """\
import typing as t

from sqlmesh import CustomMaterialization


class ReplaceAll(CustomMaterialization):
    NAME = "replace_all"

    def insert(self, table_name, query_or_df, model, is_first_insert, render_kwargs, **kwargs) -> None:
        self.adapter.replace_query(table_name, query_or_df, model.columns_to_types)
""",
    "models/custom.sql": """\
MODEL (name shapes.custom, kind CUSTOM (materialization 'replace_all'));
SELECT id, id * 100 AS big FROM shapes.items
""",
    # src.events is defined nowhere in the project (created by before_all): an external asset
    "models/from_src.sql": """\
MODEL (name shapes.from_src, kind FULL);
SELECT id FROM src.events
""",
}


def write_files(project: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_shapes_project(root: Path, name: str = "project") -> Path:
    """Every model shape SQLMesh supports, with its DuckDB files under ``root/<name>-db``."""
    project = root / name
    db = root / f"{name}-db"
    db.mkdir(parents=True, exist_ok=True)
    project.mkdir(parents=True, exist_ok=True)
    (project / "config.yaml").write_text(
        SHAPES_CONFIG.format(db=db / "warehouse.duckdb", state=db / "state.duckdb")
    )
    write_files(project, SHAPES_FILES)
    return project


# -- a multi-repo project: two repositories, one gateway; repo a has its own raw.orders --------

REPO_CONFIG = """\
project: {name}
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
  start: '2026-02-01'
"""


def write_multi_repo(root: Path) -> list[Path]:
    db = root / "multi-db"
    db.mkdir(parents=True, exist_ok=True)
    repos = []
    for name in ("repo_a", "repo_b"):
        repo = root / name
        (repo / "models").mkdir(parents=True, exist_ok=True)
        (repo / "config.yaml").write_text(
            REPO_CONFIG.format(name=name, db=db / "warehouse.duckdb", state=db / "state.duckdb")
        )
        repos.append(repo)
    write_files(
        repos[0],
        {
            "models/orders.sql": """\
MODEL (name raw.orders, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT @start_date::DATE AS ds, 10 AS amount
"""
        },
    )
    write_files(
        repos[1],
        {
            "models/totals.sql": """\
MODEL (name b.totals, kind FULL);
SELECT count(*)::BIGINT AS days, sum(amount)::BIGINT AS amount FROM raw.orders
"""
        },
    )
    return repos


# -- a team's project as `sqlmesh init` lays it out: relative DuckDB files, every source kind ---

TEAM_CONFIG = """\
gateways:
  local:
    connection:
      type: duckdb
      database: db.db
    state_connection:
      type: duckdb
      database: state.db
default_gateway: local
model_defaults:
  dialect: duckdb
  start: '2026-01-01'
  cron: '@daily'
before_all:
  - CREATE SCHEMA IF NOT EXISTS src
  - CREATE TABLE IF NOT EXISTS src.events AS SELECT 1 AS id UNION ALL SELECT 2
"""

TEAM_FILES = {
    "external_models.yaml": """\
- name: src.events
  columns:
    id: int
""",
    "seeds/waiters.csv": "id,name\n1,Ana\n2,Bo\n3,Cy\n",
    # SQLMesh's sushi example has a seed of this name: an unpartitioned model
    "models/waiter_names.sql": """\
MODEL (
  name demo.waiter_names,
  kind SEED (path '../seeds/waiters.csv'),
  columns (id INT, name TEXT)
);
""",
    "models/orders.sql": """\
MODEL (
  name demo.orders,
  kind INCREMENTAL_BY_TIME_RANGE (time_column ds),
  audits (not_null(columns := (ds)))
);
SELECT d::DATE AS ds, e.id AS event_id
FROM generate_series(@start_date, @end_date, INTERVAL 1 DAY) AS t(d), src.events AS e
""",
    # SQLMesh's documented blueprint form: the schema is templated, so SQLMesh re-renders the
    # MODEL block through sqlglot's generator (what fails when that generator predates SQLMesh)
    "models/blueprint.sql": """\
MODEL (
  name @{customer}.some_table,
  kind FULL,
  blueprints ((customer := customer1), (customer := customer2))
);
SELECT id, name FROM demo.waiter_names
""",
    "models/waiter_count.py": """\
import typing as t

import pandas as pd
from sqlmesh import ExecutionContext, model


@model("demo.waiter_count", kind="FULL", columns={"waiters": "int"}, depends_on=["demo.waiter_names"])
def execute(context: ExecutionContext, **kwargs: t.Any) -> pd.DataFrame:
    table = context.resolve_table("demo.waiter_names")
    return context.fetchdf(f"SELECT count(*)::INT AS waiters FROM {table}")
""",
}


def write_init_style_project(root: Path) -> Path:
    """A SQLMesh project in ``root`` with ``sqlmesh init``'s relative ``database: db.db`` (and a
    relative state file), a seed, an incremental SQL model, a blueprint model, a Python model and
    a declared external table."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(TEAM_CONFIG)
    write_files(root, TEAM_FILES)
    return root
