"""What an applied plan did, as plain data: per model its old and new fingerprint and version,
change category and diff, plus the intervals recomputed. ``SQLMeshResource.apply_plan`` returns
it so callers (release notes, logs) need no second SQLMesh context and see exactly the plan that
was applied under the plan lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from dagster_sqlmesh_bridge.timeutil import UTC

ADDED, REMOVED = "ADDED", "REMOVED"


@dataclass(frozen=True)
class ModelChange:
    """One model whose deployed snapshot changed (``old_*`` is None for an added model)."""

    model: str  # schema.table
    change_category: str  # ADDED, REMOVED, BREAKING, NON_BREAKING, FORWARD_ONLY, INDIRECT_*, METADATA
    old_fingerprint: str | None
    new_fingerprint: str | None
    old_version: str | None
    new_version: str | None
    diff: str = ""
    recomputed: list[tuple[str, str]] = field(default_factory=list)  # [start, end) ISO timestamps
    fqn: str = ""  # SQLMesh's fully qualified name (the translator's input for the asset key)


@dataclass(frozen=True)
class PlanOutcome:
    environment: str
    created: bool
    changes: list[ModelChange]
    # the environment's plan after it (SQLMesh's ``Environment.plan_id``): one release per plan
    plan_id: str | None = None
    # per model (fqn) of the environment afterwards: what SQLMesh's state holds (mirror.Held)
    held: dict[str, Any] = field(default_factory=dict)
    # the environment's last applied plan, described from SQLMesh's state (for a plan that
    # changed nothing: a release its first attempt failed to record is completed from it)
    last_applied: PlanOutcome | None = None

    @property
    def summary(self) -> dict[str, list[str]]:
        """The short form the plan job logs."""
        if self.created:
            return {"created": sorted(c.model for c in self.changes)}
        return {
            "changed": sorted(c.model for c in self.changes if c.change_category != REMOVED),
            "breaking": sorted(c.model for c in self.changes if c.change_category == "BREAKING"),
            "recomputed": sorted(c.model for c in self.changes if c.recomputed),
            "removed": sorted(c.model for c in self.changes if c.change_category == REMOVED),
        }


def short_name(name: str) -> str:
    """``"catalog"."schema"."table"`` -> ``schema.table``."""
    table = exp.to_table(name)
    return f"{table.db}.{table.name}" if table.db else table.name


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_plan(
    ctx: Any, environment: str, before: Any | None, plan: Any | None, spans: list[tuple[int, int, str]]
) -> PlanOutcome:
    """Compare the environment before (``before``, None if it did not exist) and after the plan.

    ``plan`` gives the text diffs of directly modified models; ``spans`` are the recomputed
    (start ms, end ms, snapshot name) ranges. Versions and categories come from SQLMesh's state.
    """
    after = ctx.state_sync.get_environment(environment)
    old = {s.name: s for s in (before.snapshots if before is not None else []) if not s.is_external}
    new = {s.name: s for s in (after.snapshots if after is not None else []) if not s.is_external}
    recomputed: dict[str, list[tuple[str, str]]] = {}
    for start, end, name in spans:
        recomputed.setdefault(name, []).append((_iso(start), _iso(end)))
    changes: list[ModelChange] = []
    for name, info in sorted(new.items()):
        prior = old.get(name)
        if prior is not None and prior.fingerprint == info.fingerprint:
            continue
        if prior is None:
            category = ADDED
        elif info.forward_only:
            category = "FORWARD_ONLY"
        else:
            category = info.change_category.name if info.change_category else "UNKNOWN"
        diff = ""
        if plan is not None and plan.context_diff.directly_modified(name):
            diff = plan.context_diff.text_diff(name)
        changes.append(
            ModelChange(
                model=short_name(name),
                change_category=category,
                old_fingerprint=prior.fingerprint.to_identifier() if prior else None,
                new_fingerprint=info.fingerprint.to_identifier(),
                old_version=prior.version if prior else None,
                new_version=info.version,
                diff=diff,
                recomputed=recomputed.get(name, []),
                fqn=name,
            )
        )
    for name, prior in sorted(old.items()):
        if name not in new:
            changes.append(
                ModelChange(
                    model=short_name(name),
                    change_category=REMOVED,
                    old_fingerprint=prior.fingerprint.to_identifier(),
                    new_fingerprint=None,
                    old_version=prior.version,
                    new_version=None,
                    fqn=name,
                )
            )
    plan_id = after.plan_id if after is not None else None
    return PlanOutcome(environment=environment, created=before is None, changes=changes, plan_id=plan_id)


@dataclass(frozen=True)
class _Snapshots:
    snapshots: list[Any]


def describe_last_plan(ctx: Any, environment: str) -> PlanOutcome | None:
    """The environment's last applied plan, from SQLMesh's state alone: its snapshots against
    the ones it replaced (``previous_finalized_snapshots``); no diff text, no intervals."""
    env = ctx.state_sync.get_environment(environment)
    if env is None:
        return None
    before = env.previous_finalized_snapshots
    outcome = describe_plan(
        ctx, environment, _Snapshots(list(before)) if before is not None else None, None, []
    )
    return outcome
