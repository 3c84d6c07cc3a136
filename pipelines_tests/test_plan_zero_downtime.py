"""Zero-downtime plans on the prod stack (DuckLake in PostgreSQL, data on S3).

The reader of the atomic restatement test (``test_atomic_restatement.py``), a process of its own
reading through the DuckLake catalog, polls the web chain while the ``sqlmesh_plan`` code path
(``SQLMeshResource.apply_plan``) applies a plan that adds a column to ``marts.web_funnel`` and adds
``marts.web_checkouts``. SQLMesh's plan builds the new versions before prod's views move,
so every read sees each day with exactly its rows, and the new mart is either absent or whole.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_sqlmesh_bridge import SQLMeshResource
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT
from pipelines_tests import test_concurrency_overlap as overlap
from pipelines_tests.test_atomic_restatement import Poller, anomalies, per_day, poller_env, run
from pipelines_tests.test_concurrency_overlap import DAYS, Stack
from pipelines_tests.test_reliability_concurrency import ListLog
from pipelines_tests.test_reliability_crash import REPO, Child

prod_stack = overlap.stack  # the fixture: raw data for DAYS ingested, environment created

CHECKOUTS = """\
MODEL (
  name marts.web_checkouts,
  kind INCREMENTAL_BY_TIME_RANGE (time_column event_date),
  owner 'team:growth',
  description 'Daily checkout sessions.',
  column_descriptions (event_date = 'Day', checkout_sessions = 'Sessions that checked out'),
  audits (not_null(columns := (event_date)))
);
SELECT event_date, checkout_sessions FROM marts.web_funnel WHERE event_date BETWEEN @start_date AND @end_date
"""

CHECKOUTS_TEST = """\
test_web_checkouts_copies_checkout_sessions:
  model: marts.web_checkouts
  vars:
    start: 2026-11-20
    end: 2026-11-20
  inputs:
    marts.web_funnel:
      rows:
        - {event_date: 2026-11-20, sessions: 4, cart_sessions: 2, checkout_sessions: 1, conversion_rate: 0.25}
  outputs:
    query:
      rows:
        - {event_date: 2026-11-20, checkout_sessions: 1}
"""

# Polls the new mart until the stop file appears: one JSON line per read, {day: rows} or None
# while the table does not exist yet.
NEW_POLLER = """\
import json, sys
from pathlib import Path
from pipelines.platform.warehouse import connect
out, stop = sys.argv[1], sys.argv[2]
con = connect(read_only=True)
print("POLLER READY", flush=True)
with open(out, "w") as f:
    while not Path(stop).exists():
        try:
            seen = dict(con.execute(
                "SELECT event_date::VARCHAR, count(*) FROM marts.web_checkouts GROUP BY 1"
            ).fetchall())
        except Exception:
            seen = None
        f.write(json.dumps(seen) + "\\n")
        f.flush()
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readers_never_see_a_day_missing_while_a_plan_changes_a_mart_and_adds_one(
    prod_stack: Stack, tmp_path: Path
) -> None:
    run(prod_stack)  # the web chain over every day: the reference every read must see
    reference = per_day()
    assert all(len(days) == len(DAYS) for days in reference.values()), reference
    project = tmp_path / "project"
    shutil.copytree(BUNDLED_SQLMESH_PROJECT, project, ignore=shutil.ignore_patterns(".cache", "__pycache__"))
    funnel = project / "models" / "marts" / "web_funnel.sql"
    text = funnel.read_text().replace(
        "    AS conversion_rate\n", "    AS conversion_rate,\n  count(*)::BIGINT AS events\n"
    )
    described = "conversion_rate = 'checkout_sessions / sessions'"
    funnel.write_text(text.replace(described, described + ",\n    events = 'Events of the day'"))
    (project / "models" / "marts" / "web_checkouts.sql").write_text(CHECKOUTS)
    (project / "tests" / "test_web_checkouts.yaml").write_text(CHECKOUTS_TEST)
    marts_tests = project / "tests" / "test_marts.yaml"
    row = "checkout_sessions: 1, conversion_rate: 0.25}"
    marts_tests.write_text(marts_tests.read_text().replace(row, row[:-1] + ", events: 7}"))

    env = poller_env(prod_stack)
    poller = Poller(prod_stack.root, env, "plan-poll")
    out, stop = prod_stack.root / "new.jsonl", prod_stack.root / "new.stop"
    new_poller = Child(
        subprocess.Popen(
            [sys.executable, "-c", NEW_POLLER, str(out), str(stop)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    deadline = time.monotonic() + 120
    while not new_poller.seen("POLLER READY"):
        assert new_poller.proc.poll() is None and time.monotonic() < deadline, new_poller.tail()
        time.sleep(0.05)
    log = ListLog()
    started = time.time()
    try:
        outcome = SQLMeshResource(project_dir=str(project), gateway="prod").apply_plan(log)
    finally:
        ended = time.time()
        reads = poller.reads()
        stop.touch()
        assert new_poller.wait(timeout=60) == 0, new_poller.tail()
    changed = {c.model for c in outcome.changes}
    assert {"marts.web_funnel", "marts.web_checkouts"} <= changed, changed
    during = [r for r in reads if r["ended"] >= started and r["began"] <= ended]
    found = anomalies(reads, reference)
    new_reads = [json.loads(line) for line in out.read_text().splitlines()]
    partial = [r for r in new_reads if r is not None and sorted(r) != DAYS]
    print(
        f"plan {ended - started:.1f}s: {len(found)} anomalous reads of {len(during)} during it; "
        f"new mart: {sum(r is None for r in new_reads)} reads absent, {len(partial)} partial, "
        f"{sum(r is not None and not partial for r in new_reads)} whole"
    )
    assert found == [], found[:20]
    assert len(during) >= 5, f"too few reads during the plan: {len(during)}"
    assert partial == [], partial[:5]
    assert new_reads[0] is None and new_reads[-1] is not None and sorted(new_reads[-1]) == DAYS
