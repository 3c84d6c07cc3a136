"""The two sides of the property test (``test_prop_replay.py``) and its checks.

``Ours`` drives the generated project (``prop_project.py``) through this repository's Dagster
integration: the ``SQLMeshProjectComponent``'s definitions, jobs executed on a real
``DagsterInstance``. ``Bare`` replays the same steps with SQLMesh alone on a separate copy (its
own warehouse, its own state). ``compare`` says, after a step, where they disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines_tests import prop_project as pp

PERSON, CATCH_UP = {}, {"dagster/sensor_name": "sqlmesh_catch_up"}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the logs stay in the instance


def day_after(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def short(fqn: str) -> str:
    """``"warehouse"."demo"."daily"`` -> ``demo.daily``."""
    return ".".join(part.strip('"') for part in fqn.split(".")[-2:])


# -- the bare SQLMesh replay ----------------------------------------------------------------------


class Bare:
    """SQLMesh alone on its own copy of the project; each step means what the Dagster side's does
    (the table in ``test_prop_replay.py``'s docstring)."""

    def __init__(self, project: Path) -> None:
        self.project = project

    def context(self, path: Path | None = None) -> Any:
        from sqlmesh import Context

        return Context(paths=str(path or self.project))

    def _do(self, action: Callable[[Any], Any], path: Path | None = None) -> bool:
        from sqlmesh.utils.errors import SQLMeshError

        ctx = self.context(path)
        try:
            result = action(ctx)
        except SQLMeshError:  # PlanError and the node errors a failed backfill raises
            return False
        finally:
            ctx.close()
        return getattr(result, "name", "") != "FAILURE"

    def create(self) -> None:
        assert self._do(lambda c: c.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True))

    def run(self, first: str, last: str, automated: bool) -> bool:
        window = {"start": first, "end": day_after(last), "execution_time": day_after(last)}
        if automated:
            return self._do(lambda c: c.run("prod", **window))

        def person(ctx: Any) -> Any:
            names = [m for m in ctx.models.values() if not m.kind.is_external]
            ctx.plan(
                "prod",
                restate_models=[m.name for m in names],
                start=first,
                end=last,
                execution_time=day_after(last),
                auto_apply=True,
                no_prompts=True,
            )
            return ctx.run("prod", **window)

        return self._do(person)

    def restate(self, model: str, first: str, last: str) -> bool:
        days = {"start": first, "end": last, "execution_time": day_after(last)} if first else {}
        plan = {"restate_models": [model], "auto_apply": True, "no_prompts": True}
        return self._do(lambda c: c.plan("prod", **plan, **days))

    def deploy(self, change: pp.Change) -> bool:
        fo = change.forward_only
        return self._do(lambda c: c.plan("prod", auto_apply=True, no_prompts=True, forward_only=fo))

    def branch(self, change: pp.Change, day: str, name: str) -> bool:
        return branch_plan(self.project, change, day, name)


def branch_plan(project: Path, change: pp.Change, day: str, name: str) -> bool:
    """What ``pipelines plan-check`` does on a feature branch: a dev environment with the change
    built for one day, on the project's own state and warehouse, then invalidated."""
    from sqlmesh import Context

    ctx = Context(paths=str(pp.checkout(project, name, change.spec)))
    try:
        ctx.plan(name, start=day, end=day, execution_time=day_after(day), auto_apply=True, no_prompts=True)
        ctx.invalidate_environment(name, sync=True)
    finally:
        ctx.close()
    return True


# -- this repository's Dagster integration ---------------------------------------------------------


class Ours:
    """The project as a code location deploys it: ``SQLMeshProjectComponent``'s definitions (reloaded
    after each change of the files, as a deploy reloads the code location) and its jobs, executed
    on ``instance``. A run without automation tags is a person's; ``CATCH_UP`` is the sensor's."""

    def __init__(self, project: Path, instance: dg.DagsterInstance, days: list[str]) -> None:
        self.project, self.instance, self.days = project, instance, days
        self._defs: tuple[str, dg.Definitions] | None = None

    def defs(self) -> dg.Definitions:
        from pipelines.component.component import component_for_dirs

        files = "".join(p.read_text() for p in sorted((self.project / "models").glob("*.sql")))
        if self._defs is None or self._defs[0] != files:
            component = component_for_dirs([self.project])
            self._defs = (files, component.build_project_defs(component.load_project_info()))
        return self._defs[1]

    def key(self, model: str) -> dg.AssetKey:
        return dg.AssetKey(model.split("."))

    def _execute(self, job: str | list[str], first: str, last: str, tags: dict[str, str]) -> bool:
        defs = self.defs()
        if isinstance(job, list):
            asset_job = dg.define_asset_job("prop_restate", selection=[self.key(m) for m in job])
            defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[asset_job]))
            job = "prop_restate"
        if first:
            tags = {**tags, RANGE_START: first, RANGE_END: last}
        result = defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=QUIET, raise_on_error=False
        )
        return result.success

    def run(self, first: str, last: str, automated: bool) -> bool:
        return self._execute("scheduled_daily", first, last, CATCH_UP if automated else PERSON)

    def restate(self, model: str, first: str, last: str) -> bool:
        return self._execute([model], first, last, PERSON)

    def deploy(self, change: pp.Change) -> bool:
        config = {"allow_breaking": True, "forward_only": change.forward_only}
        result = (
            self.defs()
            .resolve_job_def("sqlmesh_plan")
            .execute_in_process(
                instance=self.instance,
                run_config={**QUIET, "ops": {"apply_sqlmesh_plan": {"config": config}}},
                raise_on_error=False,
            )
        )
        return result.success

    def branch(self, change: pp.Change, day: str, name: str) -> bool:
        return branch_plan(self.project, change, day, name)

    def dagster_view(self, models: list[str], days: list[str], fingerprint_version: Any) -> dict[str, Any]:
        """Per model what Dagster shows: the days whose partition status is MATERIALIZED, or for
        an unpartitioned model the SQLMesh version its latest materialization was made with."""
        graph = self.defs().resolve_asset_graph()
        out: dict[str, Any] = {}
        for model in models:
            key = self.key(model)
            pdef = graph.get(key).partitions_def if graph.has(key) else None
            if model in pp.PARTITIONED:
                status = self.instance.get_status_by_partition(key, days, pdef) if pdef else None
                out[model] = {
                    d for d, s in (status or {}).items() if s == dg.AssetPartitionStatus.MATERIALIZED
                }
                continue
            event = self.instance.get_latest_materialization_event(key)
            meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
            fingerprint = meta.get("sqlmesh/fingerprint")
            out[model] = fingerprint_version(model, fingerprint.value) if fingerprint else None
        return out


# -- observing and comparing ----------------------------------------------------------------------


@dataclass
class Observed:
    """One side after a step: prod's rows per model (None: no such table or view), the days
    SQLMesh's state holds for prod's snapshot of each model, and its version."""

    rows: dict[str, list[tuple[Any, ...]] | None] = field(default_factory=dict)
    days: dict[str, set[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def observe(project: Path, models: list[str], ours: Ours | None = None) -> tuple[Observed, dict[str, Any]]:
    """Read prod's rows and state with a fresh SQLMesh context on ``project``; with ``ours``,
    also what Dagster shows (read while the context is open, to map fingerprints to versions)."""
    from sqlmesh import Context
    from sqlmesh.core.snapshot import SnapshotId

    ctx = Context(paths=str(project))
    seen = Observed()
    try:
        env = ctx.state_sync.get_environment("prod")
        infos = {short(s.name): s for s in (env.snapshots if env else [])}
        snapshots = ctx.state_sync.get_snapshots([s.snapshot_id for s in infos.values()])
        for model in models:
            info = infos.get(model)
            if info is not None:
                snapshot = snapshots[info.snapshot_id]
                seen.versions[model] = snapshot.version
                seen.days[model] = {
                    datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()
                    for start, end in snapshot.intervals
                    for ms in range(start, end, 86_400_000)
                }
            try:
                rows = ctx.engine_adapter.fetchall(f"SELECT * FROM {model}")
                seen.rows[model] = sorted((tuple(r) for r in rows), key=repr)
            except Exception:  # no such view in prod (a model not deployed yet)
                seen.rows[model] = None

        def fingerprint_version(model: str, fingerprint: str) -> str | None:
            name = infos[model].name if model in infos else model
            found = ctx.state_sync.get_snapshots([SnapshotId(name=name, identifier=fingerprint)])
            return (
                next(iter(found.values())).version if found else f"? (fingerprint {fingerprint} not in state)"
            )

        view = ours.dagster_view(models, ours.days, fingerprint_version) if ours else {}
    finally:
        ctx.close()
    return seen, view


def compare(
    step: str, models: list[str], ours: Observed, bare: Observed, dagster: dict[str, Any]
) -> list[str]:
    """Every disagreement after ``step``: prod's rows, ours against bare; Dagster's status of
    each asset against the intervals SQLMesh's state (ours) holds for prod's snapshot."""
    problems = []
    for model in models:
        mine, theirs = ours.rows.get(model), bare.rows.get(model)
        if mine != theirs:
            problems.append(
                f"{step}: prod's {model} rows differ: ours {_rows(mine)}, bare SQLMesh {_rows(theirs)}"
            )
        if model not in ours.versions:
            continue
        state_days = ours.days.get(model, set())
        if model in pp.PARTITIONED:
            shown = dagster.get(model, set())
            if shown != state_days:
                problems.append(
                    f"{step}: {model}: Dagster shows materialized {_days(shown)}, SQLMesh's state "
                    f"holds for prod's version {_days(state_days)} (Dagster lacks "
                    f"{_days(state_days - shown)}, has extra {_days(shown - state_days)})"
                )
        else:
            shown, version = dagster.get(model), ours.versions[model]
            if (shown == version) != bool(state_days):
                made = (
                    f"latest materialization was made with version {shown}"
                    if shown
                    else "has no materialization"
                )
                state = "holds an interval" if state_days else "holds no interval"
                problems.append(
                    f"{step}: {model}: Dagster's {made}; prod's version is {version}, for which SQLMesh's "
                    f"state {state}"
                )
    return problems


def _rows(rows: list[tuple[Any, ...]] | None) -> str:
    if rows is None:
        return "no table"
    shown = ", ".join("(" + ", ".join(str(v) for v in row) + ")" for row in rows[:3])
    return f"{len(rows)} rows [{shown}{', ...' if len(rows) > 3 else ''}]"


def _days(days: set[str]) -> str:
    return "{" + ", ".join(d[5:] for d in sorted(days)) + "}" if days else "{}"
