"""Issue #36, item 7: random sequences of steps on a generated SQLMesh project, driven through this
repository's Dagster integration and replayed with SQLMesh alone on a separate copy.

After each step two properties must hold:

(a) prod's rows of every model are the same on both sides (``SELECT * FROM demo.<model>``);
(b) Dagster shows what SQLMesh's state (ours) holds: for a time-partitioned model the partitions
    whose status is MATERIALIZED (``get_status_by_partition``) are exactly the days of the
    intervals of prod's snapshot; for an unpartitioned model, the latest materialization was made
    with prod's version (its ``sqlmesh/fingerprint`` looked up in the state) iff prod's snapshot
    has any interval.

The project and its changes are in ``prop_project.py``, the two sides and the comparison in
``prop_harness.py``, the step vocabulary and the sequence player in ``prop_steps.py``. A
sequence stops at its first step with a disagreement (every later comparison would differ too);
each prints a one-line summary, and the run its totals. Steps, and what each means on either side:

=====================  ===========================================  ======================================
step                   ours (Dagster)                               bare SQLMesh (``Bare``)
=====================  ===========================================  ======================================
run(days, person)      ``scheduled_daily`` job over the range, no   ``plan(prod, restate_models=all,
                       automation tag: recomputes the range          start, end)`` + ``run(prod, start, end)``
run(days, automated)   the same job tagged ``dagster/sensor_name``:  ``run(prod, start, end,
                       computes what is due                          execution_time=end+1)``
restate(model, days)   a person's run of that one asset              ``plan(prod, restate_models=[model],
                       (unpartitioned: no range)                     start, end)`` (cascades downstream)
deploy(change)         ``sqlmesh_plan`` job, allow_breaking=True,    ``plan(prod, forward_only=...)``; a
                       forward_only for a forward-only change        failing build raises, prod unchanged
retry                  the last failed deploy again, same files     the same plan again
branch(change, day)    ``plan(feature_<n>, start=day, end=day)`` on a checkout with the change, sharing
                       the side's state and warehouse, then invalidated (what ``pipelines plan-check``
                       does); nothing reaches prod
=====================  ===========================================  ======================================

Every sequence starts with a person's run of all 6 days (step 0, the history): a bare prod plan
backfills a new version from the model's start, ours over the span its previous version had, and
with the whole history built those are the same days. Changes (``prop_project.Change``):
non-breaking (a column added), breaking (an expression), a new model, forward-only, failing (a
string division, ``error()``, a blocking audit that fails; after one, the next step retries it or
deploys its fix). The bare side restates as ``sqlmesh plan --restate-model`` does: downstream
models are rebuilt for the days too.

Below the random test: a control (steps today's code gets right pass both properties, so the
harness itself reports no false disagreement) and one deterministic test per line of the issue's
table.

Run: ``uv run pytest pipelines_tests/test_prop_replay.py -s`` (3 sequences x 6 steps, and the
deterministic tests); ``-m slow -k many`` (20 x 10); ``PROP_SEQUENCES`` / ``PROP_STEPS`` /
``PROP_SEED`` override a variant's size and first seed (a failure names the values that replay
it). The prod stack: ``test_prop_replay_prod.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest

from pipelines_tests import prop_project as pp
from pipelines_tests.prop_harness import Bare, Ours, observe
from pipelines_tests.prop_steps import Played, Step, history, play, set_up, take_step


@dataclass
class Sides:
    """A fresh pair of projects per sequence: ``make(n)`` returns (ours, bare, days)."""

    root: Path
    instance: dg.DagsterInstance

    def make(self, n: int) -> tuple[Ours, Bare, list[str]]:
        days = pp.closed_days()
        made = []
        for name in ("ours", "bare"):
            db = self.root / f"{name}{n}-db"
            db.mkdir(parents=True)
            gateway = pp.LOCAL_GATEWAY.format(db=db / "warehouse.duckdb", state=db / "state.duckdb")
            made.append(pp.write_project(self.root / f"{name}{n}", gateway, days[0]))
        return Ours(made[0], self.instance, days), Bare(made[1]), days


@pytest.fixture
def sides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sides]:
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PIPELINES_LAKE_URI", str(tmp_path / "lake"))
    for name in ("SQLMESH_PROJECT_DIR", "SQLMESH_GATEWAY", "PIPELINES_SHOP_DEFS"):
        monkeypatch.delenv(name, raising=False)
    # without the quality checks' profiling of each model (a third of a step's time); the slow
    # variants keep it, as deployed
    monkeypatch.setenv("PIPELINES_PROFILE", "0")
    with dg.DagsterInstance.ephemeral() as instance:  # in memory: a run takes half the time of SQLite's
        yield Sides(tmp_path, instance)


def play_many(make: object, sequences: int, steps: int, seed: int) -> list[Played]:
    """``sequences`` sequences of ``steps`` steps (seeds ``seed``, ``seed+1``...), each on fresh
    sides; prints one summary line per sequence and the totals."""
    started, played = time.monotonic(), []
    for n in range(sequences):
        ours, bare, days = make(n)  # type: ignore[operator]
        played.append(result := play(seed + n, steps, ours, bare, days))
        print(f"\n[prop] {result.summary}", flush=True)
    taken = sum(len(p.steps) for p in played)
    print(f"\n[prop] {sequences} sequences, {taken} steps in {time.monotonic() - started:.0f}s", flush=True)
    return played


def assert_all_agree(played: list[Played]) -> None:
    failed = [p for p in played if p.problems]
    report = "\n".join(
        f"seed {p.seed} (reproduce: PROP_SEED={p.seed} PROP_SEQUENCES=1 PROP_STEPS={len(p.steps) - 1}), "
        f"steps: " + " ; ".join(f"{n} {s}" for n, s in enumerate(p.steps)) + "\n  " + "\n  ".join(p.problems)
        for p in failed
    )  # fmt: skip
    assert not failed, f"{len(failed)} of {len(played)} sequences disagree:\n{report}"


def size(sequences: int, steps: int, seed: int) -> tuple[int, int, int]:
    """The variant's size and first seed, unless ``PROP_SEQUENCES`` / ``PROP_STEPS`` / ``PROP_SEED``
    say otherwise."""
    return (
        int(os.environ.get("PROP_SEQUENCES", sequences)),
        int(os.environ.get("PROP_STEPS", steps)),
        int(os.environ.get("PROP_SEED", seed)),
    )


@pytest.mark.timeout(900)
def test_random_steps_agree_with_bare_sqlmesh_and_dagster_shows_sqlmesh_state(sides: Sides) -> None:
    assert_all_agree(play_many(sides.make, *size(3, 6, 1)))


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_many_random_sequences(sides: Sides, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINES_PROFILE", "1")
    assert_all_agree(play_many(sides.make, *size(20, 10, 100)))


def test_steps_the_integration_gets_right_today_agree(sides: Sides) -> None:
    """The control: steps whose outcome today's code already shares with bare SQLMesh pass both
    properties (so a disagreement elsewhere is the integration's, not the harness's)."""
    ours, bare, days = sides.make(0)
    spec = pp.Spec()
    forward_only = pp.forward_only_change(spec)
    non_breaking = pp.good_changes(forward_only.spec)[0]
    script = [
        Step("run", days[1], days[3]),
        Step("run", days[0], days[-1], automated=True),
        Step("deploy", change=forward_only),
        Step("run", days[2], days[2]),
        Step("restate", model="demo.summary"),
        Step("deploy", change=non_breaking),
    ]
    assert_all_agree([play(0, 0, ours, bare, days, script)])


# -- the table, one deterministic regression test per line ---------------------------------

MODELS = pp.MODELS


def with_history(sides: Sides) -> tuple[Ours, Bare, list[str]]:
    ours, bare, days = sides.make(0)
    set_up(ours, bare, days)
    outcome, problems = take_step(ours, bare, history(days), 0)
    assert outcome == {"ours": True, "bare": True} and not problems, (outcome, problems)
    return ours, bare, days


def test_a_failing_breaking_change_deployed_twice_fails_twice_and_prod_keeps_its_rows(sides: Sides) -> None:
    ours, bare, _ = with_history(sides)
    before, _ = observe(ours.project, MODELS)
    change = pp.failing_change(pp.Spec(), "totals_error")
    attempts = [
        take_step(ours, bare, Step(kind, change=change), n)[0] for n, kind in ((1, "deploy"), (2, "retry"))
    ]
    after, _ = observe(ours.project, MODELS)
    assert [a["bare"] for a in attempts] == [False, False], (
        f"bare SQLMesh applied the failing change: {attempts}"
    )
    said = ["APPLIED" if a["ours"] else "failed" for a in attempts]
    changed = {
        m: f"{len(before.rows[m] or [])} -> {len(after.rows[m] or [])} rows"
        for m in MODELS
        if before.rows[m] != after.rows[m]
    }
    moved = sorted(m for m in MODELS if before.versions.get(m) != after.versions.get(m))
    assert said == ["failed", "failed"] and not changed and not moved, (
        f"deploy({change}) twice: first attempt {said[0]}, second {said[1]}; prod's rows changed: "
        f"{changed or 'none'}; prod's views moved to another version: {moved or 'none'}"
    )


def test_a_prod_deploy_after_a_branch_built_one_day_holds_every_day(sides: Sides) -> None:
    ours, bare, days = with_history(sides)
    change = pp.Change("breaking", "demo.daily amount * 2", replace(pp.Spec(), daily_mult=2))
    take_step(ours, bare, Step("branch", days[2], days[2], change=change), 1)
    outcome, problems = take_step(ours, bare, Step("deploy", change=change), 2)
    mine, _ = observe(ours.project, MODELS)
    theirs, _ = observe(bare.project, MODELS)
    assert outcome == {"ours": True, "bare": True}, problems
    assert all(theirs.days[m] == set(days) for m in ("demo.daily", "demo.daily_totals")), theirs.days
    short = {
        m: f"{len(mine.days[m])} of {len(days)} days"
        for m in ("demo.daily", "demo.daily_totals")
        if mine.days[m] != set(days)
    }
    differ = {
        m: f"ours {len(mine.rows[m] or [])} rows, bare {len(theirs.rows[m] or [])}"
        for m in MODELS
        if mine.rows[m] != theirs.rows[m]
    }
    assert not short and not differ, (
        f"after branch({change}, {days[2]}) and deploy: prod's new versions hold {short or 'every day'}; "
        f"rows differing from bare SQLMesh: {differ or 'none'}"
    )


def test_days_a_plan_built_for_a_new_model_are_materialized_in_dagster_after_catch_up(sides: Sides) -> None:
    ours, bare, days = with_history(sides)
    change = pp.good_changes(pp.Spec())[-1]
    assert change.kind == "new_model"
    outcome, problems = take_step(ours, bare, Step("deploy", change=change), 1)
    assert outcome == {"ours": True, "bare": True}, problems
    outcome, problems = take_step(ours, bare, Step("run", days[0], days[-1], automated=True), 2)
    assert outcome == {"ours": True, "bare": True}, problems
    mine, dagster = observe(ours.project, MODELS, ours)
    top = "demo.daily_top"
    assert mine.days[top] == set(days), f"SQLMesh's plan built {sorted(mine.days[top])} of {days}"
    assert dagster[top] == set(days), (
        f"after the plan added {top} (SQLMesh built its {len(days)} days) and a catch-up run over them, "
        f"Dagster shows {len(dagster[top])} of {len(days)} partitions materialized: {sorted(dagster[top])}"
    )
