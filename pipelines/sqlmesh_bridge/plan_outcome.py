"""What an applied plan did, as plain data: per model its old and new fingerprint and version,
change category and diff, plus the intervals recomputed. ``SQLMeshResource.apply_plan`` returns
it so callers (release notes, logs) need no second SQLMesh context and see exactly the plan that
was applied under the plan lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

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


@dataclass(frozen=True)
class PlanOutcome:
    environment: str
    created: bool
    changes: list[ModelChange]

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
    recomputed = {name: [(_iso(start), _iso(end))] for start, end, name in spans}
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
                )
            )
    return PlanOutcome(environment=environment, created=before is None, changes=changes)
