"""New files in the landing zone trigger ingestion of the day they belong to.

File-drop sources (contracts of kind ``files``) deliver ``landing/<source>/<YYYY-MM-DD>/<file>``.
The cursor keeps the newest last-modified time seen and the keys seen at exactly that time, so
objects sharing a timestamp are neither skipped nor repeated; each tick reads at most
``max_objects`` new objects, oldest first. On S3 the listing is ``dagster_aws``'s
``get_objects``; locally the folder is walked with ``Lake.list``. A day that has not ended yet
is not a partition yet: its files are remembered in the cursor and requested once it has.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError, safe_file_name, safe_partition_key
from dagster_sqlmesh_bridge.schedules import RUN_RETRY_TAGS, Clock, last_closed_day, utc_now
from pipelines.platform.lake import Lake
from pipelines.platform.partitions import PROJECT_START
from pipelines.platform.settings import Settings
from pipelines.shop.ingestion import raw_asset_key
from pipelines.shop.sources.contracts import CONTRACTS

log = logging.getLogger(__name__)
LANDING = "landing"
CURSOR_VERSION = 1
MAX_PENDING = 1000


def file_sources() -> list[str]:
    return sorted(name for name, c in CONTRACTS.items() if c.kind == "files")


@dataclass(frozen=True)
class LandedFile:
    """One object under ``landing/``; ``version`` is the S3 ETag or, locally, mtime and size."""

    key: str
    last_modified: datetime
    version: str


@dataclass
class LandingCursor:
    last_modified: datetime | None = None
    keys_at: set[str] = field(default_factory=set)
    # "<source>/<day>" -> "<key>|<version>" of the newest file seen for a day not yet closed
    pending: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        if raw.get("v") != CURSOR_VERSION:
            raise ValueError(f"unknown landing cursor version {raw.get('v')!r}")
        seen = raw.get("last_modified")
        last = datetime.fromisoformat(seen) if seen else None
        return cls(last, set(raw.get("keys_at", [])), dict(raw.get("pending", {})))

    def dump(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "last_modified": self.last_modified.isoformat() if self.last_modified else None,
                "keys_at": sorted(self.keys_at),
                "pending": dict(sorted(self.pending.items())),
            }
        )

    def is_new(self, obj: LandedFile) -> bool:
        if self.last_modified is None or obj.last_modified > self.last_modified:
            return True
        return obj.last_modified == self.last_modified and obj.key not in self.keys_at

    def advance(self, obj: LandedFile) -> None:
        if self.last_modified is None or obj.last_modified > self.last_modified:
            self.last_modified, self.keys_at = obj.last_modified, {obj.key}
        elif obj.last_modified == self.last_modified:
            self.keys_at.add(obj.key)


def list_landing(lake: Lake, since: datetime | None) -> list[LandedFile]:
    """Objects under ``landing/`` modified at or after ``since``, oldest first."""
    if lake.is_s3:
        from dagster_aws.s3.sensor import get_objects

        prefix = f"{lake.prefix}/{LANDING}/" if lake.prefix else f"{LANDING}/"
        strip = len(lake.prefix) + 1 if lake.prefix else 0
        objects = get_objects(
            bucket=lake.bucket,
            prefix=prefix,
            since_last_modified=since - timedelta(microseconds=1) if since else None,
            client=lake.client,
        )
        found = [
            LandedFile(o["Key"][strip:], o["LastModified"].astimezone(UTC), o.get("ETag", "").strip('"'))
            for o in objects
        ]
    else:
        found = [
            LandedFile(o.key, o.last_modified, f"{int(o.last_modified.timestamp() * 1_000_000)}-{o.size}")
            for o in lake.list(LANDING)
            if since is None or o.last_modified >= since
        ]
    return sorted(found, key=lambda f: (f.last_modified, f.key))


def parse_landing_key(key: str, sources: Iterable[str]) -> tuple[str, str]:
    """``(source, day)`` of ``landing/<source>/<day>/<file>``; raises ``ValueError`` otherwise."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != LANDING:
        raise ValueError("not landing/<source>/<YYYY-MM-DD>/<file>")
    _, source, day, name = parts
    if source not in set(sources):
        raise ValueError(f"{source!r} is not a file-drop source")
    try:
        safe_partition_key(day)
        safe_file_name(name)
    except InvalidIdentifierError as exc:
        raise ValueError(str(exc)) from exc
    return source, day


@dataclass(frozen=True)
class LandingTick:
    run_requests: list[dg.RunRequest]
    cursor: LandingCursor
    skipped: list[tuple[str, str]]
    seen: int


def _request(source: str, day: str, newest: str, files: int) -> dg.RunRequest:
    key, _, version = newest.rpartition("|")
    return dg.RunRequest(
        run_key=f"{source}:{day}:{key}:{version}",
        partition_key=day,
        asset_selection=[raw_asset_key(source)],
        tags={**RUN_RETRY_TAGS, "pipelines/trigger": "landing", "pipelines/landing_files": str(files)},
    )


def evaluate_landing(
    lake: Lake, cursor: LandingCursor, max_objects: int, now: datetime, sources: Iterable[str]
) -> LandingTick:
    """One tick: which partitions to ingest again and the cursor after it (pure of Dagster)."""
    sources = list(sources)
    fresh = [obj for obj in list_landing(lake, cursor.last_modified) if cursor.is_new(obj)][:max_objects]
    closed = last_closed_day(now)
    start = date.fromisoformat(PROJECT_START)
    due: dict[tuple[str, str], tuple[str, int]] = {}
    skipped: list[tuple[str, str]] = []
    for obj in fresh:
        cursor.advance(obj)
        try:
            source, day = parse_landing_key(obj.key, sources)
        except ValueError as exc:
            skipped.append((obj.key, str(exc)))
            continue
        when = date.fromisoformat(day)
        if when < start or when > closed + timedelta(days=1):
            skipped.append((obj.key, f"day {day} is outside {PROJECT_START}..{closed + timedelta(days=1)}"))
            continue
        marker = f"{obj.key}|{obj.version}"
        if when > closed:
            if len(cursor.pending) < MAX_PENDING:
                cursor.pending[f"{source}/{day}"] = marker
            continue
        files = due.get((source, day), ("", 0))[1]
        due[(source, day)] = (marker, files + 1)
    for slot, marker in sorted(cursor.pending.items()):
        source, day = slot.split("/")
        if date.fromisoformat(day) <= closed:
            del cursor.pending[slot]
            due.setdefault((source, day), (marker, 1))
    requests = [_request(s, d, marker, n) for (s, d), (marker, n) in sorted(due.items())]
    return LandingTick(requests, cursor, skipped, len(fresh))


def landing_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "ingest_landed_files",
        selection=[raw_asset_key(s) for s in file_sources()],
        description="Ingests the days of file-drop sources that received new landing files.",
    )


def build_landing_sensor(
    job: dg.UnresolvedAssetJobDefinition,
    max_objects: int | None = None,
    minimum_interval_seconds: int = 60,
    clock: Clock = utc_now,
) -> dg.SensorDefinition:
    """The sensor; ``max_objects`` defaults to ``PIPELINES_LANDING_MAX_OBJECTS`` or 500."""

    @dg.sensor(
        name="landing_files",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Ingests a file-drop source's day again when new files land for it.",
    )
    def _landing(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        limit = max_objects or int(os.environ.get("PIPELINES_LANDING_MAX_OBJECTS", "500"))
        if limit < 1:
            raise ValueError("PIPELINES_LANDING_MAX_OBJECTS must be at least 1")
        lake = Lake(Settings.from_env().lake_uri)
        tick = evaluate_landing(lake, LandingCursor.parse(context.cursor), limit, clock(), file_sources())
        for key, reason in tick.skipped:
            context.log.warning(f"skipping landing object {key!r}: {reason}")
        cursor = tick.cursor.dump()
        if not tick.run_requests:
            return dg.SensorResult(skip_reason=f"{tick.seen} new object(s), nothing to ingest", cursor=cursor)
        return dg.SensorResult(run_requests=tick.run_requests, cursor=cursor)

    return _landing
