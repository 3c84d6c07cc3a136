"""The generated SQLMesh project of the property test (``test_prop_replay.py``) and its changes.

The project is a pure function of a ``Spec``: the same spec always writes the same files, so a
change made on a branch and the same change deployed later have the same SQLMesh fingerprints.

    raw.events (external, created up front: 3 rows per day for the 6 closed days before today)
      -> demo.daily         INCREMENTAL_BY_TIME_RANGE (ds)
      -> demo.clean         VIEW
      -> demo.daily_totals  INCREMENTAL_BY_TIME_RANGE (ds)   -> demo.summary  FULL
      -> demo.daily_top     INCREMENTAL_BY_TIME_RANGE (ds), only once a ``new model`` change added it
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

DAYS_BACK = 6
PARTITIONED = ("demo.daily", "demo.daily_totals", "demo.daily_top")
UNPARTITIONED = ("demo.clean", "demo.summary")
MODELS = sorted(PARTITIONED + UNPARTITIONED)  # every model the project has or may have

LOCAL_GATEWAY = """\
gateways:
  local:
    connection: {{type: duckdb, database: '{db}'}}
    state_connection: {{type: duckdb, database: '{state}'}}
default_gateway: local
"""

# DuckDB with a DuckLake catalog (metadata in PostgreSQL, data on S3), state in PostgreSQL
PROD_GATEWAY = """\
gateways:
  prod:
    connection:
      type: duckdb
      catalogs:
        lake:
          type: ducklake
          path: 'postgres:{catalog_dsn}'
          data_path: '{data_path}'
          data_inlining_row_limit: 0
      extensions: [httpfs, ducklake, postgres]
      secrets:
        - {{type: s3, key_id: testing, secret: testing, region: us-east-1, endpoint: '{s3_endpoint}',
            url_style: path, use_ssl: false}}
      concurrent_tasks: 1
      register_comments: false
    state_connection: {{type: postgres, host: '{host}', port: {port}, user: '{user}',
                        password: '{password}', database: '{state_db}'}}
default_gateway: prod
"""

DEFAULTS = """\
model_defaults:
  dialect: duckdb
  start: '{start}'
  cron: '@daily'
"""

EXTERNAL = """\
- name: raw.events
  columns: {ds: DATE, id: INT, amount: INT}
"""

FAILURES = ("daily_string_division", "totals_error", "totals_audit")


def closed_days(today: date | None = None) -> list[str]:
    """The 6 closed days before today (UTC), oldest first: the project's whole history."""
    today = today or datetime.now(UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(DAYS_BACK, 0, -1)]


@dataclass(frozen=True)
class Spec:
    """What the project's files say; each field is changed by one kind of change."""

    daily_mult: int = 1  # breaking change of demo.daily: amount * daily_mult
    daily_cols: int = 0  # non-breaking: extra columns at the end of demo.daily
    factor: int = 1  # breaking change of demo.daily_totals: total = sum(amount2) * factor + offset
    offset: int = 0  # the forward-only change of demo.daily_totals
    totals_cols: int = 0  # non-breaking: extra columns at the end of demo.daily_totals
    top: bool = False  # demo.daily_top exists (the "new model" change)
    fail: str | None = None  # one of FAILURES: the spec's models fail when SQLMesh evaluates them

    def models(self) -> dict[str, str]:
        amount = f"amount * {self.daily_mult}"
        if self.fail == "daily_string_division":
            amount = f"{amount} / 'not a number'"
        daily_extra = "".join(f", amount + {i} AS extra_{i}" for i in range(1, self.daily_cols + 1))
        total = f"(sum(amount2) * {self.factor} + {self.offset})::BIGINT"
        if self.fail == "totals_error":
            total = "CAST(error('boom: a failing change') AS BIGINT)"
        totals_extra = "".join(
            f", max(amount2)::BIGINT + {i} AS top_{i}" for i in range(1, self.totals_cols + 1)
        )
        audit = (
            ",\n  audits (accepted_range(column := total, max_v := -1))"
            if self.fail == "totals_audit"
            else ""
        )
        files = {
            "daily.sql": f"""\
MODEL (name demo.daily, kind INCREMENTAL_BY_TIME_RANGE (time_column ds), grain (ds, id));
SELECT ds, id, ({amount})::BIGINT AS amount{daily_extra}
FROM raw.events WHERE ds BETWEEN @start_ds AND @end_ds
""",
            "clean.sql": """\
MODEL (name demo.clean, kind VIEW);
SELECT ds, id, amount * 2 AS amount2 FROM demo.daily
""",
            "daily_totals.sql": f"""\
MODEL (name demo.daily_totals, kind INCREMENTAL_BY_TIME_RANGE (time_column ds){audit});
SELECT ds, {total} AS total, count(*)::BIGINT AS n{totals_extra}
FROM demo.clean WHERE ds BETWEEN @start_ds AND @end_ds GROUP BY ds
""",
            "summary.sql": """\
MODEL (name demo.summary, kind FULL);
SELECT count(*)::BIGINT AS days, sum(total)::BIGINT AS total FROM demo.daily_totals
""",
        }
        if self.top:
            files["daily_top.sql"] = """\
MODEL (name demo.daily_top, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));
SELECT ds, max(amount2)::BIGINT AS top FROM demo.clean WHERE ds BETWEEN @start_ds AND @end_ds GROUP BY ds
"""
        return files

    def model_names(self) -> list[str]:
        return [*PARTITIONED[:2], *(PARTITIONED[2:] if self.top else ()), *UNPARTITIONED]


@dataclass(frozen=True)
class Change:
    """One change to the project: ``kind`` and ``what`` name it in failure messages, ``spec``
    is the project after it."""

    kind: str  # non_breaking | breaking | new_model | forward_only | failing | fix
    what: str
    spec: Spec
    forward_only: bool = False

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def good_changes(spec: Spec) -> list[Change]:
    """The changes that build (what a branch or a good deploy may pick)."""

    def change(kind: str, what: str, **fields: object) -> Change:
        return Change(kind, what, replace(spec, **fields))  # type: ignore[arg-type]

    d, t = spec.daily_cols + 1, spec.totals_cols + 1
    out = [
        change("non_breaking", f"demo.daily + extra_{d}", daily_cols=d),
        change("non_breaking", f"demo.daily_totals + top_{t}", totals_cols=t),
        change("breaking", f"demo.daily amount * {spec.daily_mult + 1}", daily_mult=spec.daily_mult + 1),
        change("breaking", f"demo.daily_totals total * {spec.factor + 1}", factor=spec.factor + 1),
    ]
    if not spec.top:
        out.append(change("new_model", "demo.daily_top", top=True))
    return out


def forward_only_change(spec: Spec) -> Change:
    what = f"demo.daily_totals total + {spec.offset + 1}"
    return Change("forward_only", what, replace(spec, offset=spec.offset + 1), forward_only=True)


def failing_change(spec: Spec, failure: str) -> Change:
    """A breaking change whose build fails (``failure``: one of FAILURES); ``fix_of`` gives the
    same change done right."""
    if failure == "daily_string_division":
        what = f"demo.daily amount * {spec.daily_mult + 1} / 'not a number'"
        return Change("failing", what, replace(spec, daily_mult=spec.daily_mult + 1, fail=failure))
    what = {"totals_error": "error('boom')", "totals_audit": "a blocking audit that fails"}[failure]
    return Change(
        "failing",
        f"demo.daily_totals total * {spec.factor + 1}, {what}",
        replace(spec, factor=spec.factor + 1, fail=failure),
    )


def fix_of(change: Change) -> Change:
    return Change("fix", change.what.split(" / ")[0].split(", ")[0], replace(change.spec, fail=None))


def write_project(root: Path, gateway: str, start: str) -> Path:
    """The config and external model of a project under ``root`` (its models: ``write_models``)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(gateway + DEFAULTS.format(start=start))
    (root / "external_models.yaml").write_text(EXTERNAL)
    return root


def write_models(root: Path, spec: Spec) -> None:
    """Make ``root/models`` exactly the spec's models (a model the spec lacks is removed)."""
    folder = root / "models"
    wanted = spec.models()
    for path in folder.glob("*.sql"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def checkout(root: Path, name: str, spec: Spec) -> Path:
    """A copy of the project (same gateway, so the same state and warehouse) with ``spec``'s
    models: what a feature branch's CI plans from."""
    target = root.parent / f"{root.name}-{name}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(".cache", "logs"))
    write_models(target, spec)
    return target


def raw_events_sql(days: list[str]) -> list[str]:
    """The statements creating raw.events: 3 rows per day, amounts differing by day and id."""
    values = ", ".join(f"(DATE '{d}', {i}, {(n + 1) * 10 + i})" for n, d in enumerate(days) for i in range(3))
    return [
        "CREATE SCHEMA IF NOT EXISTS raw",
        f"CREATE OR REPLACE TABLE raw.events AS SELECT * FROM (VALUES {values}) AS t(ds, id, amount)",
    ]
