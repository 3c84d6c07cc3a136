"""One daily incremental run on the production stack (issue 27, item 3): ours vs a bare ``sqlmesh run``.

    uv run python bench/bench_prod_daily.py [--models 1000] [--days 2] [--repeats 2] [--no-floor]
        [--profile ours.prof] [--topology central|sidecar]

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

``--topology sidecar`` (issue 38, item 3) measures the deployment of helm-values.yaml instead:
no central PgBouncer; each process ("pod") gets its own PgBouncer beside it, started from the
sidecar's ConfigMap (``pipelines_tests.pooler.start_sidecar``: ``auth_type = trust`` on the
loopback, so a client login costs no key derivation; session pooling; SCRAM logins from the
sidecar to PostgreSQL), and the apps connect to it with ``sslmode=disable``, as in the pods. The
timed process gets a fresh sidecar (a new run pod has a cold pool), stopped after it, so
``server_sessions`` are the logins PostgreSQL saw for that run; ``logins_*`` are the client
logins at the sidecar; ``sidecar_maxwait_s`` is the longest a client waited for a pooled
connection (0: the pool size never held a run back).
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
from pipelines_tests.pooler import PgBouncer, start_sidecar, stop_pgbouncer  # noqa: E402
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


# Dagster's storage as the chart renders it for the pods: the sidecar on the loopback, no TLS
SIDECAR_POSTGRES_YAML = POSTGRES_YAML + "      params: {sslmode: disable}\n"


class Stack:
    """PostgreSQL + PgBouncer + an S3 server for the whole benchmark; fresh databases per side."""

    def __init__(self, topology: str = "central") -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per S3 request
        self.topology = topology
        self.server, self.bouncer = _start_pg()
        if topology == "sidecar":  # no central pooler: each process gets its own
            stop_pgbouncer(self.bouncer)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def close(self) -> None:
        self.moto.stop()
        _stop_pg((self.server, self.bouncer))

    def new_side(self, root: Path) -> tuple[dict[str, str], S3Env]:
        """A side's own databases (role -> database) and bucket."""
        dbs = {role: self.server.create_database() for role in ("dagster", "sqlmesh", "ducklake", "shop")}
        s3 = S3Env(endpoint_url=self.endpoint, bucket=f"bench-{uuid.uuid4().hex[:12]}")
        s3.client().create_bucket(Bucket=s3.bucket)
        home = root / "home"
        home.mkdir()
        yaml = SIDECAR_POSTGRES_YAML if self.topology == "sidecar" else POSTGRES_YAML
        (home / "dagster.yaml").write_text(yaml)
        return dbs, s3

    def side_env(
        self, root: Path, project: Path, dbs: dict[str, str], s3: S3Env, bouncer: PgBouncer
    ) -> dict[str, str]:
        """The prod environment of one side, every PostgreSQL connection (Dagster's too) through
        ``bouncer`` (the central PgBouncer, or the side's sidecar)."""
        pooled = dataclasses.replace(self.server, host=bouncer.host, port=bouncer.port)
        home = root / "home"
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
        if self.topology == "sidecar":
            env["PIPELINES_PG_SSLMODE"] = "disable"  # as the pods: loopback, TLS at the sidecar
        return env

    def counters(self, dbs: dict[str, str], bouncer: PgBouncer | None) -> dict[str, int]:
        """PgBouncer's client logins per role so far (none: a stopped sidecar), and the server
        sessions of the side's DBs."""
        out = {}
        if bouncer is not None:
            out = {f"logins_{role}": bouncer.logins(db) for role, db in dbs.items() if role != "shop"}
        con = self.server.connect()
        try:
            with con.cursor() as cur:
                cur.execute("SELECT pg_stat_clear_snapshot()")
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
    sidecar = stack.topology == "sidecar"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = _project(root, models)
        dbs, s3 = stack.new_side(root)
        # the setup's "pod": its own sidecar, or the central PgBouncer
        bouncer = start_sidecar(stack.server) if sidecar else stack.bouncer
        env = stack.side_env(root, project, dbs, s3, bouncer)
        started = time.perf_counter()
        try:
            if tool == "bare":
                _process(sys.executable, BARE_BACKFILL + "print(0, 0)", env, str(project), str(day))
            else:
                _process(sys.executable, OUR_LOAD, env)  # the definitions cache, as an image has it
                code = OUR_JOB if tool == "ours" else RUN_FLOOR
                _process(sys.executable, code + BACKFILL, env, FIRST.isoformat(), last.isoformat())
        finally:
            if sidecar:
                stop_pgbouncer(bouncer)
        setup = time.perf_counter() - started
        if sidecar:  # the run's pod: a fresh sidecar with a cold pool
            time.sleep(1.5)  # ended backends flush their statistics within a second
            bouncer = start_sidecar(stack.server)
            env = stack.side_env(root, project, dbs, s3, bouncer)
        before = stack.counters(dbs, bouncer)
        extra: dict[str, float] = {}
        try:
            if tool == "bare":
                run, wall, events = _process(
                    sys.executable, BARE_RUN, env, str(project), (day + timedelta(days=1)).isoformat()
                )
            else:
                code = (OUR_JOB if tool == "ours" else RUN_FLOOR) + TIMED_DAY
                if profile is not None and tool == "ours":
                    env["BENCH_PROFILE"] = str(profile)
                run, wall, events = _process(sys.executable, code, env, day.isoformat(), day.isoformat())
            if sidecar:
                pools = [p for p in bouncer.admin("SHOW POOLS") if p["database"] in dbs.values()]
                extra["sidecar_maxwait_s"] = max(
                    (p["maxwait"] + p["maxwait_us"] / 1e6 for p in pools), default=0.0
                )
                extra["sidecar_server_conns_at_end"] = len(
                    [s for s in bouncer.admin("SHOW SERVERS") if s["database"] in dbs.values()]
                )
        finally:
            logins = stack.counters(dbs, bouncer)
            if sidecar:
                stop_pgbouncer(bouncer)  # its server connections end: PostgreSQL counts them
                time.sleep(1.5)
        after = {**logins, **stack.counters(dbs, None)}
    result: dict[str, float] = {"setup_s": setup, "run_s": run, "process_s": wall, "events": events}
    result.update({k: after[k] - before[k] for k in after})
    result["logins_total"] = sum(v for k, v in result.items() if k.startswith("logins_"))
    result.update(extra)
    return result


def summarize(reps: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "models": args.models,
        "days_backfilled": args.days,
        "repeats": args.repeats,
        "topology": args.topology,
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
    parser.add_argument(
        "--topology",
        choices=("central", "sidecar"),
        default="central",
        help="central: one PgBouncer with SCRAM logins for all; sidecar: a PgBouncer beside each process",
    )
    args = parser.parse_args()
    tools = ["bare", "ours"] + ([] if args.no_floor else ["floor"])
    stack = Stack(args.topology)
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
