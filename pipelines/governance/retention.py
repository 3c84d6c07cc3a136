"""Retention of the lake's raw zone and quarantine, per source contract.

Raw partitions (``raw/<source>/ds=YYYY-MM-DD/``) are kept ``retention_days`` and quarantined
rows (``quarantine/<source>/ds=YYYY-MM-DD/``) ``quarantine_retention_days``, counted from the
partition's date. Anything that is not such a partition of a contracted source is reported and
left alone: retention deletes what it understands and nothing else.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from pipelines.platform.lake import Lake
from pipelines.shop.sources.contracts import CONTRACTS, SourceContract

ZONES = ("raw", "quarantine")
_PARTITION = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class DeletedPartition:
    zone: str
    source: str
    partition: str
    objects: int


@dataclass(frozen=True)
class Skipped:
    prefix: str
    reason: str


@dataclass
class RetentionReport:
    today: date
    dry_run: bool = False
    deleted: list[DeletedPartition] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    kept: int = 0

    def deleted_by_source(self) -> dict[str, list[DeletedPartition]]:
        out: dict[str, list[DeletedPartition]] = {}
        for item in self.deleted:
            out.setdefault(item.source, []).append(item)
        return out

    def summary(self) -> dict[str, object]:
        return {
            "today": self.today.isoformat(),
            "dry_run": self.dry_run,
            "deleted_partitions": len(self.deleted),
            "deleted_objects": sum(d.objects for d in self.deleted),
            "kept_partitions": self.kept,
            "skipped": [f"{s.prefix}: {s.reason}" for s in self.skipped],
        }


def _days(contract: SourceContract, zone: str) -> int:
    return contract.retention_days if zone == "raw" else contract.quarantine_retention_days


def _partition_date(folder: str) -> date | None:
    match = _PARTITION.match(folder)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def apply_retention(
    lake: Lake,
    contracts: Mapping[str, SourceContract] = CONTRACTS,
    today: date | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Delete every raw/quarantine partition older than its contract allows; report the rest."""
    today = today or date.today()
    report = RetentionReport(today, dry_run)
    for zone in ZONES:
        partitions: dict[tuple[str, str], list[str]] = {}
        skipped: dict[str, str] = {}
        for obj in lake.list(zone):
            parts = obj.key.split("/")
            if len(parts) < 4:
                skipped.setdefault(obj.key, "not inside a partition folder")
                continue
            source, folder = parts[1], parts[2]
            contract = contracts.get(source)
            if contract is None:
                skipped.setdefault(f"{zone}/{source}/", "no contract for this source")
            elif _partition_date(folder) is None:
                skipped.setdefault(f"{zone}/{source}/{folder}/", "not a ds=YYYY-MM-DD partition")
            elif _days(contract, zone) < 1:
                skipped.setdefault(f"{zone}/{source}/", f"retention of {_days(contract, zone)} days refused")
            else:
                partitions.setdefault((source, folder), []).append(obj.key)
        report.skipped.extend(Skipped(prefix, reason) for prefix, reason in sorted(skipped.items()))
        for (source, folder), keys in sorted(partitions.items()):
            day = _partition_date(folder)
            assert day is not None
            if (today - day).days <= _days(contracts[source], zone):
                report.kept += 1
                continue
            if not dry_run:
                for key in keys:
                    lake.delete(key)
                _remove_empty_folder(lake, f"{zone}/{source}/{folder}")
            report.deleted.append(DeletedPartition(zone, source, day.isoformat(), len(keys)))
    return report


def _remove_empty_folder(lake: Lake, prefix: str) -> None:
    """Local lakes keep empty folders around; S3 has none. Never removes anything non-empty."""
    if lake.is_s3:
        return
    folder = lake.root / prefix
    with contextlib.suppress(OSError):  # not empty (a writer's hidden temp file): leave it
        folder.rmdir()
