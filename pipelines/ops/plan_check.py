"""``pipelines plan-check``: what a change would do to the data, before it reaches prod.

For the working tree it creates (or updates) a SQLMesh virtual environment named after the git
branch on the configured gateway, backfills only the models the change touches over a short
recent range (unchanged models point at prod's tables: SQLMesh's virtual environments), and
writes a markdown summary: models added/changed/removed with their change category, the
intervals the ``sqlmesh_plan`` job would recompute in prod, and per changed model SQLMesh's
table diff against prod over that range (row counts, schema changes, a sample of changed rows;
PII and masked columns left out). Prod is only read. The environment is invalidated and
removed afterwards (its physical tables go with the janitor once their TTL passes).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlglot import exp

from dagster_sqlmesh_bridge.identifiers import (
    InvalidIdentifierError,
    safe_identifier,
    safe_partition_key,
    sql_string,
)

SAMPLE_ROWS = 10
# Classifications whose values never leave the warehouse through a summary (docs/governance.md)
HIDDEN_LEVELS = ("pii", "masked")


class PlanCheckError(RuntimeError):
    """The check could not be made (no prod state, a detached HEAD without --branch, ...)."""


def environment_name(branch: str) -> str:
    """The SQLMesh environment of a branch: ``feature/Add-FX`` -> ``feature_add_fx``.

    Lower-case letters, digits and underscores only (a schema suffix in the warehouse), never
    ``prod``, at most 48 characters so the suffixed schema names stay within 63.
    """
    name = re.sub(r"[^a-z0-9]+", "_", branch.lower()).strip("_")
    if not name:
        raise InvalidIdentifierError(f"branch {branch!r} gives no usable environment name")
    if name[0].isdigit():
        name = f"b_{name}"
    name = name[:48].rstrip("_")
    if name in ("prod", "production"):
        raise InvalidIdentifierError(f"branch {branch!r} would plan into prod: plan-check never does")
    return safe_identifier(name, "environment name")


def current_branch() -> str:
    """The branch being checked: ``GITHUB_HEAD_REF`` on a pull request, else git's branch."""
    head_ref = os.environ.get("GITHUB_HEAD_REF", "").strip()
    if head_ref:
        return head_ref
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--abbrev-ref", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise PlanCheckError(f"no git branch found ({exc}): pass --branch") from exc
    if not out or out == "HEAD":
        raise PlanCheckError("detached HEAD: pass --branch")
    return out


@dataclass
class TableDiffSummary:
    prod_rows: int
    branch_rows: int
    added_columns: list[str]
    removed_columns: list[str]
    changed_types: list[str]
    matching_rows: int
    changed_rows: int
    prod_only_rows: int
    branch_only_rows: int
    sample: list[dict[str, Any]]


@dataclass
class ModelCheck:
    model: str
    change: str  # added, removed, directly modified, indirectly modified
    category: str
    prod_intervals: list[tuple[str, str]] = field(default_factory=list)
    diff: TableDiffSummary | None = None
    branch_rows: int | None = None
    note: str = ""


@dataclass
class PlanCheck:
    branch: str
    environment: str
    gateway: str | None
    start: str
    end: str
    models: list[ModelCheck]
    removed_environment: bool = False

    def markdown(self) -> str:
        out = [
            f"## SQLMesh plan check: `{self.branch}`",
            "",
            f"Environment `{self.environment}` on gateway `{self.gateway or 'default'}`, changed models "
            f"backfilled for {self.start} .. {self.end} and compared with `prod` over those days."
            + (
                " The environment was removed afterwards." if self.removed_environment and self.models else ""
            ),
            "",
        ]
        if not self.models:
            return "\n".join([*out, "No model differs from prod.", ""])
        out += [
            "| model | change | category | a prod apply (`sqlmesh_plan` job) recomputes |",
            "| --- | --- | --- | --- |",
        ]
        for m in self.models:
            spans = ", ".join(f"{s} .. {e}" for s, e in m.prod_intervals) or "nothing"
            out.append(f"| `{m.model}` | {m.change} | {m.category.lower().replace('_', '-')} | {spans} |")
        for m in self.models:
            out += ["", f"### `{m.model}`", ""]
            if m.note:
                out.append(m.note)
            if m.branch_rows is not None:
                out.append(f"Rows in `{self.environment}` for the range: {m.branch_rows}.")
            if m.diff is not None:
                out += _diff_markdown(m.diff)
        return "\n".join(out) + "\n"


def _diff_markdown(d: TableDiffSummary) -> list[str]:
    lines = [
        f"- rows: prod {d.prod_rows}, branch {d.branch_rows}",
        f"- rows by key: {d.matching_rows} identical, {d.changed_rows} changed, "
        f"{d.prod_only_rows} only in prod, {d.branch_only_rows} only in the branch",
    ]
    if d.added_columns or d.removed_columns or d.changed_types:
        lines.append(
            "- schema: "
            + "; ".join(
                part
                for part in (
                    "added " + ", ".join(d.added_columns) if d.added_columns else "",
                    "removed " + ", ".join(d.removed_columns) if d.removed_columns else "",
                    "type changed " + ", ".join(d.changed_types) if d.changed_types else "",
                )
                if part
            )
        )
    else:
        lines.append("- schema: unchanged")
    if d.sample:
        columns = list(d.sample[0])
        lines += ["", f"Sample of changed rows ({len(d.sample)}):", ""]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + " --- |" * len(columns))
        for row in d.sample:
            lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return lines


def _cell(value: Any) -> str:
    text = "" if value is None or value != value else str(value)  # noqa: PLR0124 - NaN check
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def _iso_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def _merged(intervals: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """Processed intervals as inclusive day ranges."""
    spans: list[list[int]] = []
    for start, end in sorted(intervals):
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [(_iso_day(s), _iso_day(e - 1)) for s, e in spans]


def _short(name: str) -> str:
    from dagster_sqlmesh_bridge.plan_outcome import short_name

    return short_name(name)


def _category(snapshot: Any) -> str:
    if snapshot.is_forward_only:
        return "FORWARD_ONLY"
    return snapshot.change_category.name if snapshot.change_category else "UNCATEGORIZED"


def _hidden_columns(project_dir: Path, gateway: str | None) -> dict[str, list[str]]:
    from dagster_sqlmesh_bridge import load_project
    from pipelines.governance import column_classifications

    levels = column_classifications(load_project(project_dir, gateway))
    return {fqn: [c for c, level in cols.items() if level in HIDDEN_LEVELS] for fqn, cols in levels.items()}


def _table_diff(
    ctx: Any, name: str, environment: str, where: str | None, skip: list[str]
) -> TableDiffSummary:
    (diff,) = ctx.table_diff(
        source="prod",
        target=environment,
        select_models=[name],
        where=where,
        skip_columns=skip or None,
        limit=SAMPLE_ROWS,
        show=False,
        warn_grain_check=True,
    )
    schema = diff.schema_diff()
    rows = diff.row_diff()
    sample = rows.joined_sample.head(SAMPLE_ROWS)
    hidden = {c.lower() for c in skip}
    keep = [c for c in sample.columns if c.lower().split("__", 1)[-1] not in hidden]
    return TableDiffSummary(
        prod_rows=rows.source_count,
        branch_rows=rows.target_count,
        added_columns=[c for c, _ in schema.added],
        removed_columns=[c for c, _ in schema.removed],
        changed_types=[f"{c} {a.sql()} -> {b.sql()}" for c, (a, b) in schema.modified.items()],
        matching_rows=rows.full_match_count,
        changed_rows=rows.partial_match_count,
        prod_only_rows=rows.s_only_count,
        branch_only_rows=rows.t_only_count,
        sample=sample[keep].to_dict(orient="records"),
    )


def _range_filter(model: Any, start: str, end: str) -> str | None:
    if not model.kind.is_incremental_by_time_range or model.time_column is None:
        return None
    column = safe_identifier(model.time_column.column.name, "time column")
    return f'"{column}" BETWEEN {sql_string(start)} AND {sql_string(end)}'


def run_plan_check(
    project_dir: Path,
    gateway: str | None,
    branch: str,
    start: str,
    end: str,
    keep: bool = False,
) -> PlanCheck:
    """Plan the working tree into the branch's environment, backfill, diff against prod."""
    from sqlmesh import Context

    from dagster_sqlmesh_bridge.context_setup import project_configs

    environment = environment_name(branch)
    start, end = safe_partition_key(start), safe_partition_key(end)
    execution_time = date.fromisoformat(end) + timedelta(days=1)
    hidden = _hidden_columns(project_dir, gateway)
    ctx = Context(paths=str(project_dir), config=project_configs([project_dir]), gateway=gateway)
    check = PlanCheck(branch, environment, ctx.selected_gateway, start, end, [])
    try:
        prod = ctx.state_sync.get_environment("prod")
        if prod is None or not prod.finalized_ts:
            raise PlanCheckError("there is no finished prod environment in the SQLMesh state to compare with")
        local = {n: s.fingerprint.to_identifier() for n, s in ctx.snapshots.items()}
        if local == {s.name: s.fingerprint.to_identifier() for s in prod.snapshots}:
            return check  # nothing differs (SQLMesh would refuse an environment without changes)
        plan = ctx.plan_builder(environment, start=start, end=end, execution_time=execution_time).build()
        diff = plan.context_diff
        prod_by_name = {s.name: s for s in prod.snapshots}
        by_name = {s.name: s for s in diff.snapshots.values()}
        prod_snapshots = ctx.state_sync.get_snapshots([s.snapshot_id for s in prod.snapshots])
        for sid in sorted(diff.added):
            if diff.snapshots[sid].is_external:  # a new source: nothing of ours to compare
                continue
            check.models.append(
                ModelCheck(
                    _short(sid.name), "added", "ADDED", note="New model: nothing to compare with in prod."
                )
            )
        for sid in sorted(sid for sid, info in diff.removed_snapshots.items() if not info.is_external):
            check.models.append(
                ModelCheck(
                    _short(sid.name),
                    "removed",
                    "REMOVED",
                    note="Removed: prod keeps its data until the plan.",
                )
            )
        for name in sorted(diff.modified_snapshots):
            snapshot = by_name[name]
            if snapshot.is_external:
                continue
            prior = prod_by_name.get(name)
            old = prod_snapshots.get(prior.snapshot_id) if prior is not None else None
            check.models.append(
                ModelCheck(
                    _short(name),
                    "directly modified" if diff.directly_modified(name) else "indirectly modified",
                    _category(snapshot),
                    prod_intervals=_merged(old.intervals) if old is not None else [],
                )
            )
        with _shared_state_plan_lock(ctx, gateway):
            ctx.apply(plan)  # only the environment's views and the changed models' new tables
        for item in check.models:
            if item.change != "removed":
                _compare(ctx, item, environment, start, end, hidden)
    finally:
        try:
            if not keep:
                ctx.invalidate_environment(environment, sync=True)
                # this environment only: the snapshots' tables follow with the scheduled janitor
                # once their TTL passes (an ignore_ttl janitor could drop another check's tables)
                ctx.run_janitor(ignore_ttl=False, environment=environment)
                check.removed_environment = ctx.state_sync.get_environment(environment) is None
        finally:
            ctx.close()
    return check


@contextmanager
def _shared_state_plan_lock(ctx: Any, gateway: str | None) -> Iterator[None]:
    """Prod's plan lock while applying, when the state is a shared PostgreSQL: a check then never
    writes the state while the ``sqlmesh_plan`` job or a run's first environment does."""
    import logging

    from dagster_sqlmesh_bridge.locks import postgres_state
    from dagster_sqlmesh_bridge.resource import postgres_plan_lock

    state = postgres_state(ctx.config, gateway)
    if state is None:
        yield
        return
    with postgres_plan_lock(state, logging.getLogger(__name__)):
        yield


def _compare(
    ctx: Any, item: ModelCheck, environment: str, start: str, end: str, hidden: dict[str, list[str]]
) -> None:
    """An added model's row count in the environment, a changed one's table diff against prod."""
    model = next(m for m in ctx.models.values() if _short(m.fqn) == item.model)
    where = _range_filter(model, start, end)
    if item.change == "added":
        view = exp.to_table(model.fqn)  # the environment's view: <schema>__<environment>.<table>
        view.set("db", exp.to_identifier(f"{view.db}__{environment}"))
        sql = f"SELECT count(*) FROM {view.sql(dialect=ctx.engine_adapter.dialect)}"
        sql += f" WHERE {where}" if where else ""
        item.branch_rows = int(ctx.engine_adapter.fetchone(sql)[0])
        return
    try:
        item.diff = _table_diff(ctx, model.fqn, environment, where, hidden.get(model.fqn, []))
    except Exception as exc:  # e.g. no grain to join on: say so, keep the rest
        item.note = f"No table diff: {exc}"


@contextmanager
def _run_lock(lock_file: str | None) -> Iterator[None]:
    """Hold the file lock the local deployment's SQLMesh runs hold (``SQLMeshResource.lock_file``):
    the DuckDB warehouse has one writer, so the check waits for a running job instead of failing."""
    if not lock_file:
        yield
        return
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(args: argparse.Namespace) -> int:
    from sqlmesh.utils.errors import SQLMeshError

    from pipelines.platform.resources import build_resources
    from pipelines.platform.settings import Settings

    settings = Settings.from_env()
    end = args.end or (date.today() - timedelta(days=1)).isoformat()
    start = (
        args.start
        or (date.fromisoformat(safe_partition_key(end)) - timedelta(days=args.days - 1)).isoformat()
    )
    try:
        branch = args.branch or current_branch()
        with _run_lock(build_resources(settings)["sqlmesh"].lock_file):
            check = run_plan_check(
                settings.sqlmesh_project_dir, settings.sqlmesh_gateway, branch, start, end, keep=args.keep
            )
    except (PlanCheckError, InvalidIdentifierError) as exc:
        print(f"plan-check: {exc}", file=sys.stderr)
        return 2
    except SQLMeshError as exc:  # failing unit tests, lint errors, a failed backfill
        print(f"plan-check: SQLMesh refused the change: {exc}", file=sys.stderr)
        return 1
    text = check.markdown()
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--branch", help="branch name (default: GITHUB_HEAD_REF, else git's current branch)")
    parser.add_argument("--start", help="first day to backfill and compare (YYYY-MM-DD)")
    parser.add_argument("--end", help="last day (YYYY-MM-DD), default yesterday")
    parser.add_argument("--days", type=int, default=3, help="days to compare when --start is not given")
    parser.add_argument("--output", help="also write the markdown summary to this file")
    parser.add_argument(
        "--keep", action="store_true", help="keep the environment (to query it) instead of removing it"
    )
