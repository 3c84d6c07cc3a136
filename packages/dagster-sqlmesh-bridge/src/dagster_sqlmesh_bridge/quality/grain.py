"""Partition grains: how a model's time column is cut into the partitions its checks judge.

A SQLMesh model's ``interval_unit`` (hour, day, month, ...) is its grain. Partition keys are
written the way Dagster writes them for that cadence (``2026-01-31`` for daily and coarser,
``2026-01-31-05:00`` for hourly and finer), so a check's partition is the asset's partition.
Every key is parsed back into a datetime before it reaches SQL: nothing else is ever inlined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dagster_sqlmesh_bridge.identifiers import InvalidIdentifierError

_DAY_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MINUTE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{2}:\d{2}$")


@dataclass(frozen=True)
class Grain:
    """One partition cadence: its name (SQLMesh's interval unit) and its length."""

    name: str
    minutes: int  # 0 for calendar months and years

    @property
    def sub_daily(self) -> bool:
        return 0 < self.minutes < 1440

    def parse(self, key: str) -> datetime:
        """A partition key back to the partition's start, rejecting anything else."""
        pattern = _MINUTE_KEY if self.sub_daily else _DAY_KEY
        if not isinstance(key, str) or not pattern.fullmatch(key):
            raise InvalidIdentifierError(f"invalid {self.name} partition key {key!r}")
        try:
            if self.sub_daily:
                return datetime.strptime(key, "%Y-%m-%d-%H:%M")
            return datetime.combine(date.fromisoformat(key), datetime.min.time())
        except ValueError as exc:
            raise InvalidIdentifierError(f"invalid partition key {key!r}: {exc}") from exc

    def key(self, start: datetime | date) -> str:
        if not isinstance(start, datetime):
            start = datetime.combine(start, datetime.min.time())
        return start.strftime("%Y-%m-%d-%H:%M") if self.sub_daily else start.strftime("%Y-%m-%d")

    def next(self, start: datetime) -> datetime:
        if self.minutes:
            return start + timedelta(minutes=self.minutes)
        years, month = divmod(start.month + (12 if self.name == "year" else 1) - 1, 12)
        return start.replace(year=start.year + years, month=month + 1)

    def keys_between(self, first: str, last: str) -> list[str]:
        """Every key from ``first`` to ``last`` inclusive (a run's partition range)."""
        at, end = self.parse(first), self.parse(last)
        keys = []
        while at <= end:
            keys.append(self.key(at))
            at = self.next(at)
        return keys

    def aligned(self, at: datetime) -> bool:
        """Whether ``at`` is the start of one of this grain's partitions."""
        if self.sub_daily:
            return at.second == 0 and (at.hour * 60 + at.minute) % self.minutes == 0
        midnight = at.time() == datetime.min.time()
        if self.name == "day":
            return midnight
        return midnight and at.day == 1 and (self.name == "month" or at.month == 1)

    def run_keys(self, first: str, last: str) -> list[str]:
        """This grain's partitions that a run over keys ``first``..``last`` wrote.

        Keys of this grain are taken as they are. Daily keys (a run of daily assets, which
        also carries models of other grains) cover the whole days: every hour of them, or the
        months that lie whole inside them (SQLMesh computes only complete intervals).
        """
        if _DAY_KEY.fullmatch(first) and _DAY_KEY.fullmatch(last) and self is not DAY_GRAIN:
            start, end = DAY_GRAIN.parse(first), DAY_GRAIN.next(DAY_GRAIN.parse(last))
            if not self.sub_daily and not (self.aligned(start) and self.aligned(end)):
                keys, at = [], start
                while not self.aligned(at):
                    at += timedelta(days=1)
                while self.next(at) <= end:
                    keys.append(self.key(at))
                    at = self.next(at)
                return keys
            keys, at = [], start
            while at < end:
                keys.append(self.key(at))
                at = self.next(at)
            return keys
        return self.keys_between(first, last)

    def bucket_sql(self, column_sql: str) -> str:
        """SQL that maps a time value to its partition's start."""
        if self.name == "day":
            return f"CAST({column_sql} AS DATE)"
        if self.name in ("hour", "month", "year"):
            return f"date_trunc('{self.name}', CAST({column_sql} AS TIMESTAMP))"
        return f"time_bucket(INTERVAL '{self.minutes} minutes', CAST({column_sql} AS TIMESTAMP))"

    def literal(self, at: datetime) -> str:
        """``at`` as a SQL literal (DATE for whole days, so DuckDB compares DATE columns natively)."""
        if at.time() == datetime.min.time() and not self.sub_daily:
            return f"DATE '{at.date().isoformat()}'"
        return f"TIMESTAMP '{at.isoformat(sep=' ')}'"


GRAINS = {
    g.name: g
    for g in (
        Grain("five_minute", 5),
        Grain("quarter_hour", 15),
        Grain("half_hour", 30),
        Grain("hour", 60),
        Grain("day", 1440),
        Grain("month", 0),
        Grain("year", 0),
    )
}
DAY = DAY_GRAIN = GRAINS["day"]


def grain_of(interval_unit: str | None) -> Grain:
    """The grain of a SQLMesh interval unit (``day`` when it is unknown)."""
    return GRAINS.get((interval_unit or "day").lower(), DAY)
