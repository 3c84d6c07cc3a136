"""The step vocabulary of the property test (``test_prop_replay.py``): random steps a team could
take, applied to both sides (``prop_harness.Ours`` and ``Bare``) and checked after each."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipelines_tests import prop_project as pp
from pipelines_tests.prop_harness import Bare, Ours, compare, observe


@dataclass(frozen=True)
class Step:
    """One step of a sequence; ``str(step)`` is how failure messages name it."""

    kind: str  # run | restate | deploy | retry | branch
    first: str = ""
    last: str = ""
    automated: bool = False
    model: str = ""
    change: pp.Change | None = None

    def __str__(self) -> str:
        days = f"{self.first[5:]}..{self.last[5:]}" if self.first else ""
        if self.kind == "run":
            return f"run({days}, {'automated' if self.automated else 'person'})"
        if self.kind == "restate":
            return f"restate({self.model}{', ' + days if days else ''})"
        if self.kind == "branch":
            return f"branch({self.change}, {self.first[5:]})"
        return f"{self.kind}({self.change})"


@dataclass
class Model:
    """What the generator knows: the current spec, a failed deploy waiting for a retry or its
    fix, and a change a branch built (a later deploy merges it)."""

    spec: pp.Spec = field(default_factory=pp.Spec)
    failed: pp.Change | None = None
    branched: pp.Change | None = None


def next_step(rng: random.Random, model: Model, days: list[str]) -> Step:
    """A random step that a team could take now. After a failed deploy: its retry or its fix
    (half each). Otherwise: a run of a day range (30%, person or automated), a restatement (15%),
    a branch (15%), a deploy (40%: the branch's change if there is one, at 70%; else a good
    change 45%, forward-only 20%, failing 35%). A range is one day at 30%."""
    if model.failed is not None:
        if rng.random() < 0.5:
            return Step("retry", change=model.failed)
        return Step("deploy", change=pp.fix_of(model.failed))
    a, b = sorted(rng.sample(range(len(days)), 2)) if rng.random() < 0.7 else [rng.randrange(len(days))] * 2
    roll = rng.random()
    if roll < 0.3:
        return Step("run", days[a], days[b], automated=rng.random() < 0.5)
    if roll < 0.45:
        target = rng.choice([m for m in model.spec.model_names() if m != "demo.clean"])
        if target in pp.UNPARTITIONED:
            return Step("restate", model=target)
        return Step("restate", days[a], days[b], model=target)
    if roll < 0.6:
        change = rng.choice(pp.good_changes(model.spec))
        return Step("branch", days[b], days[b], change=change)
    if model.branched is not None and rng.random() < 0.7:
        return Step("deploy", change=model.branched)
    pick = rng.random()
    if pick < 0.45:
        change = rng.choice(pp.good_changes(model.spec))
    elif pick < 0.65:
        change = pp.forward_only_change(model.spec)
    else:
        change = pp.failing_change(model.spec, rng.choice(pp.FAILURES))
    return Step("deploy", change=change)


def advance(model: Model, step: Step, deployed: bool) -> None:
    """The generator's model after ``step`` (``deployed``: the bare side applied the deploy)."""
    if step.kind == "branch":
        model.branched = step.change
    elif step.kind in ("deploy", "retry") and step.change is not None:
        if deployed:  # a branch made before is stale now (its change was relative to the old spec)
            model.spec, model.failed, model.branched = step.change.spec, None, None
        else:
            model.failed = step.change


@dataclass
class Played:
    """One sequence: its steps (step 0 is the history), and the disagreements of the first step
    that had any (the sequence stops there: after a divergence every comparison differs)."""

    seed: int
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        verdict = f"DISAGREE at step {len(self.steps) - 1}" if self.problems else "agree"
        listed = " ; ".join(f"{n} {s}" for n, s in enumerate(self.steps))
        return f"seed {self.seed}: {len(self.steps)} steps, {verdict}: {listed}"


def set_up(ours: Ours, bare: Bare, days: list[str], spec: pp.Spec | None = None) -> None:
    """Both sides: the models of ``spec``, raw.events for ``days``, bare's prod environment
    (ours creates its own on its first run)."""
    for side in (ours.project, bare.project):
        pp.write_models(side, spec or pp.Spec())
        ctx = bare.context(side)
        try:
            for sql in pp.raw_events_sql(days):
                ctx.engine_adapter.execute(sql)
        finally:
            ctx.close()
    bare.create()


def history(days: list[str]) -> Step:
    """Step 0 of every sequence: a person's run of every day."""
    return Step("run", days[0], days[-1])


def take_step(ours: Ours, bare: Bare, step: Step, number: int) -> tuple[dict[str, bool], list[str]]:
    """``step`` on both sides (a deploy first writes its change into both projects); returns
    whether it succeeded on each, and the problems an outcome that differs makes."""
    if step.change is not None and step.kind in ("deploy", "retry"):
        for side in (ours.project, bare.project):
            pp.write_models(side, step.change.spec)
    outcome = {name: _take(side, step, number) for name, side in (("ours", ours), ("bare", bare))}
    if outcome["ours"] == outcome["bare"]:
        return outcome, []
    said = {k: "succeeded" if v else "failed" for k, v in outcome.items()}
    return outcome, [f"step {number} {step}: ours {said['ours']}, bare SQLMesh {said['bare']}"]


def check(ours: Ours, bare: Bare, label: str) -> list[str]:
    """Both properties after the step ``label``, for every model the project has or may have."""
    mine, dagster = observe(ours.project, pp.MODELS, ours)
    theirs, _ = observe(bare.project, pp.MODELS)
    return compare(label, pp.MODELS, mine, theirs, dagster)


def play(
    seed: int, count: int, ours: Ours, bare: Bare, days: list[str], script: list[Step] | None = None
) -> Played:
    """Set up both sides, take the history step and ``count`` random steps (or the steps of
    ``script``) on both, checking after each; stop at the first step with a disagreement."""
    rng, model, played = random.Random(seed), Model(), Played(seed)
    set_up(ours, bare, days)
    count = len(script) if script is not None else count
    for number in range(count + 1):
        if number == 0:
            step = history(days)
        else:
            step = script[number - 1] if script is not None else next_step(rng, model, days)
        played.steps.append(str(step))
        outcome, problems = take_step(ours, bare, step, number)
        advance(model, step, outcome["bare"])
        problems += check(ours, bare, f"step {number} {step}")
        if problems:
            played.problems = problems
            break
    return played


def _take(side: Ours | Bare, step: Step, number: int) -> bool:
    if step.kind == "run":
        return side.run(step.first, step.last, step.automated)
    if step.kind == "restate":
        return side.restate(step.model, step.first, step.last)
    if step.kind == "branch":
        assert step.change is not None
        return side.branch(step.change, step.first, f"feature_{number}")
    assert step.change is not None
    return side.deploy(step.change)
