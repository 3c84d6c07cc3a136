"""Schedules derived from the models' own SQLMesh ``cron``, and a catch-up sensor.

SQLMesh already says how often each model should run; Dagster only has to tick at the same
times. Models are grouped by cron and partitions definition (a Dagster run targets partitions of
one definition: hourly and daily models of the same cron are two jobs); each group gets one asset
job and one schedule. A daily-partitioned group also carries the ingestion assets it reads, and
every tick requests the partitions of the group's own definition that closed since the previous
tick (one day for ``@daily``, the hours of the day for a daily tick of hourly models), so each run
shows up on its partitions. Crons are evaluated with ``croniter``, the library SQLMesh itself
uses for them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dagster as dg
from croniter import croniter

from dagster_sqlmesh_bridge.partition_runs import contiguous_key_ranges, keys_closed_between
from dagster_sqlmesh_bridge.project import ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.timeutil import UTC
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# Step-level RetryPolicy already covers transient source errors; a run-level retry is only for
# the run itself dying (evicted pod, lost worker), not for a model or audit that failed.
RUN_RETRY_TAGS = {
    "dagster/max_retries": "2",
    "dagster/retry_strategy": "FROM_FAILURE",
    "dagster/retry_on_asset_or_op_failure": "false",
}
CRON_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def cron_string(cron: str) -> str:
    """A five-field cron for a SQLMesh cron or alias (``@daily`` -> ``0 0 * * *``)."""
    text = " ".join(cron.strip().split())
    text = CRON_ALIASES.get(text.lower(), text)
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(f"unsupported cron {cron!r}: use @hourly/@daily/@weekly/@monthly or 5 fields")
    return text


def cron_slug(cron: str) -> str:
    """A name fragment for a cron: ``@daily`` -> ``daily``, ``0 6 * * *`` -> ``cron_0_6_x_x_x``."""
    if cron.strip().lower() in CRON_ALIASES:
        return cron.strip().lower().lstrip("@")
    return "cron_" + re.sub(r"[^A-Za-z0-9]+", "_", cron_string(cron).replace("*", "x")).strip("_")


def previous_tick(cron: str, at: datetime) -> datetime:
    """The last tick of ``cron`` strictly before ``at`` (UTC, as SQLMesh evaluates crons)."""
    return croniter(cron_string(cron), at.astimezone(UTC)).get_prev(datetime)


@functools.lru_cache(maxsize=256)
def cron_period(cron: str, at: datetime | None = None) -> timedelta:
    """The longest gap between consecutive ticks over the next few (a month for @monthly)."""
    it = croniter(cron_string(cron), (at or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC))
    ticks = [it.get_next(datetime) for _ in range(6)]
    return max(b - a for a, b in zip(ticks, ticks[1:], strict=False))


def last_closed_day(at: datetime) -> date:
    """The latest daily partition that has fully ended at ``at``: the day before, in UTC."""
    return at.astimezone(UTC).date() - timedelta(days=1)


def range_tags(first: str, last: str) -> dict[str, str]:
    return {RANGE_START: first, RANGE_END: last}


@dataclass(frozen=True)
class CronGroup:
    """Models sharing one SQLMesh cron and one partitions definition, and the job that runs them.

    ``suffix`` tells apart the groups of one cron (``hour``, ``day``, ``unpartitioned``...):
    empty when the cron has one group, so the usual names stay ``scheduled_daily``...
    """

    cron: str
    models: tuple[ModelInfo, ...]
    model_keys: tuple[dg.AssetKey, ...]
    partitions_def: dg.PartitionsDefinition | None = None
    suffix: str = ""
    prefix: str = ""  # one per SQLMesh project of a code location (``orders_``); empty for one
    # groups of daily assets the models read that a daily run carries along (e.g. ingestion)
    upstream_groups: tuple[str, ...] = ()

    @property
    def partitioned(self) -> bool:
        return self.partitions_def is not None

    @property
    def job_name(self) -> str:
        return f"{self.prefix}scheduled_{cron_slug(self.cron)}" + (f"_{self.suffix}" if self.suffix else "")

    @property
    def schedule_name(self) -> str:
        return f"{self.job_name}_schedule"

    @property
    def selection(self) -> dg.AssetSelection:
        """The models, plus (when daily-partitioned) the assets of ``upstream_groups`` they read
        directly (those are daily: a run of another definition cannot carry them)."""
        models = dg.AssetSelection.assets(*self.model_keys)
        if not self.carries_upstream:
            return models
        return models | (models.upstream(depth=1) & dg.AssetSelection.groups(*self.upstream_groups))

    @property
    def carries_upstream(self) -> bool:
        return bool(self.upstream_groups) and isinstance(self.partitions_def, dg.DailyPartitionsDefinition)

    def job(self) -> dg.UnresolvedAssetJobDefinition:
        what = f"and the {', '.join(self.upstream_groups)} assets they read " if self.carries_upstream else ""
        return dg.define_asset_job(
            self.job_name,
            selection=self.selection,
            description=f"SQLMesh models with cron {self.cron} {what}(scheduled on the same cron).",
        )


def cron_groups(
    project: ProjectInfo,
    translator: SQLMeshTranslator,
    prefix: str = "",
    upstream_groups: tuple[str, ...] = (),
) -> list[CronGroup]:
    """One group per distinct cron (aliases and their cron strings are the same group) and
    partitions definition. Unpartitioned models (FULL, VIEW...) share the run of their cron's
    partitioned models when these have one definition, else they are a group of their own."""
    by_cron: dict[str, list[ModelInfo]] = {}
    for model in project.internal_models:
        by_cron.setdefault(cron_string(model.cron), []).append(model)
    groups = []
    for cron, models in sorted(by_cron.items()):
        label = next((m.cron for m in models if m.cron.strip().lower() in CRON_ALIASES), cron)
        by_def: dict[dg.PartitionsDefinition | None, list[ModelInfo]] = {}
        units: dict[dg.PartitionsDefinition | None, str] = {None: "unpartitioned"}
        for model in models:
            pdef = translator.get_partitions_def(model, project)
            by_def.setdefault(pdef, []).append(model)
            if pdef is not None:
                units.setdefault(pdef, model.interval_unit or "partitioned")
        partitioned = [d for d in by_def if d is not None]
        if len(partitioned) == 1 and None in by_def:
            by_def[partitioned[0]] += by_def.pop(None)
        named: set[str] = set()
        for pdef, members in by_def.items():
            suffix = "" if len(by_def) == 1 else units[pdef]
            if suffix in named:  # two definitions of one unit (different starts)
                suffix = f"{suffix}_{len(named)}"
            named.add(suffix)
            groups.append(
                CronGroup(
                    cron=label,
                    models=tuple(members),
                    model_keys=tuple(translator.get_asset_key(m) for m in members),
                    partitions_def=pdef,
                    suffix=suffix,
                    prefix=prefix,
                    upstream_groups=upstream_groups,
                )
            )
    return groups


def build_schedule(
    group: CronGroup,
    job: dg.UnresolvedAssetJobDefinition,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """Tick on the group's cron; request the partitions of the group's own definition that
    closed since the previous tick."""
    cron = cron_string(group.cron)

    @dg.schedule(
        name=group.schedule_name,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        description=f"Runs {group.job_name} on the models' own cron ({group.cron}).",
        default_status=default_status,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = context.scheduled_execution_time or utc_now()
        if group.partitions_def is None:
            return dg.RunRequest(run_key=tick.astimezone(UTC).isoformat(), tags=RUN_RETRY_TAGS)
        keys = keys_closed_between(group.partitions_def, previous_tick(cron, tick), tick)
        if not keys:
            return dg.SkipReason(f"no partition closed since the previous tick of {cron}")
        if len(keys) == 1:
            return dg.RunRequest(run_key=keys[0], partition_key=keys[0], tags=RUN_RETRY_TAGS)
        return dg.RunRequest(
            run_key=f"{keys[0]}..{keys[-1]}", tags={**RUN_RETRY_TAGS, **range_tags(keys[0], keys[-1])}
        )

    return _schedule


def catch_up_keys(group: CronGroup, project: ProjectInfo, translator: SQLMeshTranslator) -> list[dg.AssetKey]:
    """What "done" means for a day: its partitioned marts (all partitioned models if none)."""
    partitioned = [m for m in group.models if translator.get_partitions_def(m, project) is not None]
    marts = [m for m in partitioned if m.schema == "marts"] or partitioned
    return [translator.get_asset_key(m) for m in marts]


def missing_days(
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    days: list[str],
    partitions_def: dg.PartitionsDefinition,
) -> list[str]:
    """Days not materialized for at least one key; days with a run in flight are not missing."""
    missing: set[str] = set()
    busy: set[str] = set()
    for key in keys:
        status = instance.get_status_by_partition(key, days, partitions_def) or {}
        for day in days:
            state = status.get(day)
            if state == dg.AssetPartitionStatus.IN_PROGRESS:
                busy.add(day)
            elif state != dg.AssetPartitionStatus.MATERIALIZED:
                missing.add(day)
    return sorted(missing - busy)


def build_catch_up_sensor(
    groups: list[tuple[CronGroup, dg.UnresolvedAssetJobDefinition, list[dg.AssetKey]]],
    clock: Clock = utc_now,
    minimum_interval_seconds: int = 3600,
    name: str = "catch_up",
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    lookback_days: int = 7,
    grace: timedelta = timedelta(hours=2),
) -> dg.SensorDefinition:
    """Request one single-run backfill per gap of missing partitions in the look-back window.

    A scheduled run only computes the partitions it is for, so partitions skipped while the
    daemon was down stay missing; this sensor finds them from the marts' partition status, in
    the keys of each group's own partitions definition (days, hours, months...). The newest is
    left to the schedule for ``grace`` after its tick. The run key is
    the range, so a range is requested once; a failed catch-up run is retried by run retries
    or by hand, not every hour.
    """

    @dg.sensor(
        name=name,
        jobs=[job for _, job, _ in groups],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Backfills missed daily partitions of the scheduled jobs (single run per gap).",
    )
    def _catch_up(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = clock()
        requests = []
        for group, job, keys in groups:
            newest_tick = previous_tick(cron_string(group.cron), now - grace + timedelta(microseconds=1))
            pdef = group.partitions_def
            if pdef is None or not keys:
                continue
            window = keys_closed_between(pdef, newest_tick - timedelta(days=lookback_days), newest_tick)
            if not window:
                continue
            missing = missing_days(context.instance, keys, window, pdef)
            for start, end in contiguous_key_ranges(window, missing):
                context.log.info(f"{group.job_name}: catching up {start}..{end}")
                requests.append(
                    dg.RunRequest(
                        run_key=f"catch_up:{group.job_name}:{start}..{end}",
                        job_name=job.name,
                        tags={**RUN_RETRY_TAGS, **range_tags(start, end), "pipelines/trigger": "catch_up"},
                    )
                )
        if not requests:
            return dg.SensorResult(skip_reason="no missing partitions in the look-back window")
        return dg.SensorResult(run_requests=requests)

    return _catch_up


# -- per-model policies the translator attaches ------------------------------------------------


def automation_condition_for(model: ModelInfo, partitioned: bool | None = None) -> dg.AutomationCondition:
    """Declarative automation for a model, used only when the ``sqlmesh_automation`` sensor runs.

    Partitioned models follow their inputs partition by partition (``eager``); unpartitioned
    ones (FULL, VIEW...) refresh once per SQLMesh cron after their inputs updated. Either way a
    failed blocking check on an input (a failed SQLMesh audit) holds the model back.
    """
    # every time-range model is partitioned in its own unit (hours, days, months...)
    partitioned = model.time_partitioned if partitioned is None else partitioned
    base = (
        dg.AutomationCondition.eager()
        if partitioned
        else dg.AutomationCondition.on_cron(cron_string(model.cron), "UTC")
    )
    return base & dg.AutomationCondition.all_deps_blocking_checks_passed()


# kinds that no cron refreshes on their own: a view is rebuilt with its model, a seed changes with
# the project, an embedded model is no table
NO_FRESHNESS_KINDS = {"VIEW", "SEED", "EMBEDDED", "EXTERNAL"}
DEFAULT_GRACE = timedelta(hours=6)


def freshness_grace(cron: str, grace: timedelta | None = None) -> timedelta:
    """How long after a tick its data may still be missing: ``grace`` when given, else 6 h but
    never more than one period (a ``*/15`` model is late after 15 minutes, not 6 hours)."""
    return grace if grace is not None else min(DEFAULT_GRACE, cron_period(cron))


def freshness_policy_for(model: ModelInfo, grace: timedelta | None = None) -> dg.FreshnessPolicy | None:
    """The one freshness truth of a model, from its own SQLMesh cron (any cron croniter reads).

    The schedule of the model's cron group ticks on the same cron, so a run per tick keeps the
    asset fresh and one missed tick makes it stale ``grace`` after that tick:

    - a cron that ticks once a day at a fixed time (``@daily``, ``0 6 * * *``): a deadline
      cron ``grace`` after the tick, with the tick as lower bound ("fresh data by 06:00 UTC");
    - every other cadence (``@hourly``, ``*/15 * * * *``, ``@weekly``, ``@monthly``...): a time
      window, WARN once a period has passed since the last materialization plus half the grace,
      FAIL at one period plus the grace. The period is the longest gap between ticks (31 days
      for ``@monthly``).

    Views, seeds and embedded models get none: nothing refreshes them on a cron of their own.
    """
    if model.kind in NO_FRESHNESS_KINDS:
        return None
    return _freshness_policy(model.cron, grace)


@functools.lru_cache(maxsize=256)
def _freshness_policy(cron: str, grace: timedelta | None) -> dg.FreshnessPolicy:
    """One policy per (cron, grace): Dagster walks a thousand cron ticks to build each one
    (~10 ms), which made a 1000-model load spend seconds on identical policies."""
    cron = cron_string(cron)
    grace = freshness_grace(cron, grace)
    minute, hour, *rest = cron.split(" ")
    shift = grace.total_seconds() / 60
    if rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit() and 0 < shift < 24 * 60:
        at = (int(hour) * 60 + int(minute) + int(shift)) % (24 * 60)
        return dg.FreshnessPolicy.cron(
            deadline_cron=f"{at % 60} {at // 60} * * *",
            lower_bound_delta=grace,
            timezone="UTC",
        )
    period = cron_period(cron)
    return dg.FreshnessPolicy.time_window(fail_window=period + grace, warn_window=period + grace / 2)
