"""Whether the raw days a plan's recomputation reads can still be read.

A changed model's new version is recomputed from the raw zone over the days its previous version
had. Raw days leave it: retention deletes a partition once it is older than its contract keeps
(``retention_days``), and lifecycle rules (``pipelines/platform/lifecycle_rules.yaml``) move raw
objects to Glacier, from where they must be restored before a read. Recomputing such days would
empty them (or fail midway), so the ``sqlmesh_plan`` job asks ``RawHistory`` before building and
refuses, naming sources and days (``SQLMeshResource.apply_plan``'s ``history``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pipelines.platform.lake import Lake, LakeObject
from pipelines.platform.lifecycle import load_rules
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract

ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # S3 serves them only after a restore


def archive_after_days(rules: list[dict[str, Any]], zone: str = "raw/") -> int | None:
    """After how many days the lifecycle rules move objects of ``zone`` to an archive class."""
    days = [
        step["days"]
        for rule in rules
        if zone.startswith(rule["prefix"]) or rule["prefix"].startswith(zone)
        for step in rule.get("transitions", [])
        if step.get("storage_class") in ARCHIVED
    ]
    return min(days) if days else None


def _days(ranges: Sequence[tuple[datetime, datetime]]) -> list[date]:
    out: set[date] = set()
    for start, end in ranges:
        day, last = start.date(), (end - timedelta(microseconds=1)).date()
        while day <= last:
            out.add(day)
            day += timedelta(days=1)
    return sorted(out)


def describe_days(days: Sequence[date]) -> str:
    """``2026-01-01..2026-01-05, 2026-02-01`` (consecutive days as one range)."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(r[0].isoformat() if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


@dataclass
class RawHistory:
    """The raw zone of ``lake`` judged by its contracts and lifecycle rules (a ``HistoryCheck``)."""

    lake: Lake
    contracts: Mapping[str, SourceContract] = field(default_factory=lambda: CONTRACTS)
    rules: list[dict[str, Any]] = field(default_factory=load_rules)
    today: date | None = None

    def unavailable(self, needs: Mapping[str, Sequence[tuple[datetime, datetime]]]) -> list[str]:
        today = self.today or datetime.now(UTC).date()
        # lifecycle rules act on S3 only; a local lake keeps its files where they are
        archive_after = archive_after_days(self.rules) if self.lake.is_s3 else None
        problems: list[str] = []
        for table, ranges in sorted(needs.items()):
            schema, _, source = table.partition(".")
            contract = self.contracts.get(source)
            if schema != "raw" or contract is None:
                continue  # not a raw source: nothing this check knows about
            found = self._partitions(source)
            expired, missing, archived = [], [], []
            for day in _days(ranges):
                obj = found.get(day)
                if (today - day).days > contract.retention_days:
                    expired.append(day)
                elif obj is None:
                    missing.append(day)
                elif obj.storage_class in ARCHIVED or (
                    archive_after is not None and (today - obj.last_modified.date()).days >= archive_after
                ):
                    archived.append(day)
            reasons = (
                (expired, f"past the contract's {contract.retention_days}-day retention"),
                (missing, "not in the raw zone"),
                (archived, "in Glacier, restore them first"),
            )
            problems.extend(
                f"{table}: {len(days)} day(s) {why}: {describe_days(days)}" for days, why in reasons if days
            )
        return problems

    def _partitions(self, source: str) -> dict[date, LakeObject]:
        out: dict[date, LakeObject] = {}
        for obj in self.lake.list(f"raw/{source}"):
            parts = obj.key.split("/")
            if len(parts) == 4 and parts[3] == "data.parquet" and parts[2].startswith("ds="):
                try:
                    out[date.fromisoformat(parts[2][3:])] = obj
                except ValueError:
                    continue
        return out
