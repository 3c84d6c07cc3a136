"""One daily incremental run on the production stack (issue 27, item 3): ours vs a bare ``sqlmesh run``.

    uv run python bench/bench_prod_daily.py [--models 1000] [--days 2] [--repeats 2] [--no-floor]
        [--profile ours.prof]

The production stack, as ``pipelines_tests/prod_env.py`` builds it for the tests: a durable
PostgreSQL (fsync on) behind a PgBouncer in session mode (docs/production.md) holding Dagster's
run/event storage, SQLMesh's state and the DuckLake catalog; the lake's data on an S3 server
(moto over HTTP); ``PIPELINES_ENV=prod``, gateway ``prod``. The generated project
(``generate_project.py``) gets a ``config.py`` whose only gateway is the bundled project's
``prod_gateway()``, so its DuckLake, S3 and state settings are the ones production uses.

Per repetition, each side on its own fresh databases and bucket (no shared state):

- setup, untimed: generate the project, backfill ``--days`` days (bare: ``Context.plan`` of prod;
  ours: the code location's daily scheduled job over the days as one single-run backfill, so
  the checks have their history, as in production);
- timed, each in a new process: ``bare``, ``Context(gateway=prod).run("prod")`` of the next day
  (what ``sqlmesh run`` does the morning after; janitor skipped, as our runs skip it); ``ours``,
  the scheduled job for that day's partition (what the schedule launches) with every default
  check, ``DAGSTER_EVENT_BATCH_SIZE`` as the project sets it; ``floor``, Dagster alone recording
  what ours records (the same specs, checks and partition, a step that does no work).

Figures: ``run_s`` (bare: Context load + run; Dagster sides: ``execute_in_process``, imports and
definitions before the clock), ``process_s`` (the whole process), PgBouncer's client logins per
database during the timed process (what each side would open on PostgreSQL without a pooler)
and the new PostgreSQL server sessions (``pg_stat_database.sessions``). Sides alternate order
every repetition; medians are printed as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_alternatives import RUN_FLOOR, _process, _start_pg, _stop_pg  # noqa: E402
from bench_engine import OUR_LOAD, POSTGRES_YAML  # noqa: E402
from generate_project import generate  # noqa: E402

from pipelines.ops.cli import DAGSTER_EVENT_ENV  # noqa: E402
from pipelines_tests.prod_env import build_prod_env  # noqa: E402
from pipelines_tests.services import S3Env, s3_environ  # noqa: E402

FIRST = date(2026, 3, 1)

# the generated project on the bundled project's production gateway, nothing else
PROD_CONFIG = """\
from sqlmesh.core.config import Config, ModelDefaultsConfig
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.sqlmesh_gateways import prod_gateway

install_extensions()
config = Config(
    gateways={{"prod": prod_gateway()}},
    default_gateway="prod",
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start="{start}", cron="@daily"),
)
"""

BARE_BACKFILL = """
import sys
from sqlmesh import Context
ctx = Context(paths=sys.argv[1], gateway="prod")
ctx.plan("prod", execution_time=sys.argv[2], auto_apply=True, no_prompts=True)
ctx.close()
"""

BARE_RUN = """
import sys, time
from sqlmesh import Context
t = time.perf_counter()
ctx = Context(paths=sys.argv[1], gateway="prod")
status = ctx.run("prod", execution_time=sys.argv[2], skip_janitor=True)
ctx.close()
elapsed = time.perf_counter() - t
assert status.name == "SUCCESS", status
print(elapsed, 0)
"""

# the code location's daily scheduled job (``scheduled_daily``): every model, every default check
OUR_JOB = """
import sys, time
import dagster as dg
import sqlmesh.core.context
from pipelines.definitions import defs
job_def = defs.resolve_job_def("scheduled_daily")
"""

BACKFILL = """
with dg.DagsterInstance.get() as instance:
    result = job_def.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": sys.argv[1], "dagster/asset_partition_range_end": sys.argv[2]})
assert result.success
print(0, 0)
"""

# one partition, as the schedule's RunRequest(partition_key=day) launches it
TIMED_DAY = """
import cProfile, os
profile = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
with dg.DagsterInstance.get() as instance:
    t = time.perf_counter()
    if profile:
        profile.enable()
    result = job_def.execute_in_process(instance=instance, partition_key=sys.argv[1])
    elapsed = time.perf_counter() - t
    if profile:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_PROFILE"])
    events = len(instance.all_logs(result.run_id))
assert result.success
print(elapsed, events)
"""


class Stack:
    """PostgreSQL + PgBouncer + an S3 server for the whole benchmark; fresh databases per side."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per S3 request
        self.server, self.bouncer = _start_pg()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def close(self) -> None:
        self.moto.stop()
        _stop_pg((self.server, self.bouncer))

    def side_env(self, root: Path, project: Path) -> tuple[dict[str, str], dict[str, str]]:
        """The prod environment of one side: its own databases and bucket, every PostgreSQL
        connection (Dagster's too) through PgBouncer. Returns (env, role -> database)."""
        dbs = {role: self.server.create_database() for role in ("dagster", "sqlmesh", "ducklake", "shop")}
        s3 = S3Env(endpoint_url=self.endpoint, bucket=f"bench-{uuid.uuid4().hex[:12]}")
        s3.client().create_bucket(Bucket=s3.bucket)
        pooled = dataclasses.replace(self.server, host=self.bouncer.host, port=self.bouncer.port)
        home = root / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(POSTGRES_YAML)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DAGSTER_EVENT_"))},
            **build_prod_env(pooled, s3, root, dbs),
            **s3_environ(self.endpoint),
            **DAGSTER_EVENT_ENV,
            **pooled.env("BENCH_PG"),
            "BENCH_PG_DB": dbs["dagster"],
            "DAGSTER_HOME": str(home),
            "SQLMESH_PROJECT_DIR": str(project),
            "PIPELINES_RATES_API_URL": "http://127.0.0.1:9",  # required in prod; no shop here
        }
        return env, dbs

    def counters(self, dbs: dict[str, str]) -> dict[str, int]:
        """PgBouncer's client logins per role so far, and the server sessions of the side's DBs."""
        out = {f"logins_{role}": self.bouncer.logins(db) for role, db in dbs.items() if role != "shop"}
        con = self.server.connect()
        try:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = ANY(%s)",
                    (list(dbs.values()),),
                )
                out["server_sessions"] = int(cur.fetchone()[0])
        finally:
            con.close()
        return out


def _project(root: Path, models: int) -> Path:
    project = generate(root, models)
    (project / "config.yaml").unlink()
    (project / "config.py").write_text(PROD_CONFIG.format(start=FIRST.isoformat()))
    return project


def _side(stack: Stack, tool: str, models: int, days: int, profile: Path | None = None) -> dict[str, float]:
    last = FIRST + timedelta(days=days - 1)
    day = last + timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = _project(root, models)
        env, dbs = stack.side_env(root, project)
        started = time.perf_counter()
        if tool == "bare":
            _process(sys.executable, BARE_BACKFILL + "print(0, 0)", env, str(project), str(day))
        else:
            _process(sys.executable, OUR_LOAD, env)  # the definitions cache, as an image has it
            code = OUR_JOB if tool == "ours" else RUN_FLOOR
            _process(sys.executable, code + BACKFILL, env, FIRST.isoformat(), last.isoformat())
        setup = time.perf_counter() - started
        before = stack.counters(dbs)
        if tool == "bare":
            run, wall, events = _process(
                sys.executable, BARE_RUN, env, str(project), (day + timedelta(days=1)).isoformat()
            )
        else:
            code = (OUR_JOB if tool == "ours" else RUN_FLOOR) + TIMED_DAY
            if profile is not None and tool == "ours":
                env["BENCH_PROFILE"] = str(profile)
            run, wall, events = _process(sys.executable, code, env, day.isoformat(), day.isoformat())
        after = stack.counters(dbs)
    result: dict[str, float] = {"setup_s": setup, "run_s": run, "process_s": wall, "events": events}
    result.update({k: after[k] - before[k] for k in after})
    result["logins_total"] = sum(v for k, v in result.items() if k.startswith("logins_"))
    return result


def summarize(reps: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "models": args.models,
        "days_backfilled": args.days,
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
    }
    for label in reps[0]:
        row = {k: statistics.median(r[label][k] for r in reps) for k in reps[0][label]}
        for figure in ("run_s", "process_s"):
            row[f"{figure}_vs_bare"] = statistics.median(r[label][figure] / r["bare"][figure] for r in reps)
        if label == "ours" and "floor" in reps[0]:
            row["run_vs_floor_plus_bare"] = statistics.median(
                r["ours"]["run_s"] / (r["floor"]["run_s"] + r["bare"]["run_s"]) for r in reps
            )
        report[label] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--days", type=int, default=2, help="days backfilled before the timed day")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--profile", type=Path, help="cProfile our timed run into this file (skews its time)")
    args = parser.parse_args()
    tools = ["bare", "ours"] + ([] if args.no_floor else ["floor"])
    stack = Stack()
    try:
        reps = []
        for i in range(args.repeats):
            rep = {}
            for tool in tools if i % 2 == 0 else reversed(tools):
                rep[tool] = _side(stack, tool, args.models, args.days, args.profile)
                print(tool, rep[tool], f"load {os.getloadavg()}", file=sys.stderr, flush=True)
            reps.append(rep)
    finally:
        stack.close()
    print(json.dumps(summarize(reps, args), indent=2))


if __name__ == "__main__":
    main()
