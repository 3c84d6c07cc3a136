"""SQLMesh's recorded outcome of each model as Dagster events: a materialization per partition
SQLMesh computed (with that partition's own row count), the audits' and the hook's verdicts, and
the failures raised once every success was reported."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg

from dagster_sqlmesh_bridge.hooks import ModelHook, ModelReport
from dagster_sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.timeutil import UTC
from dagster_sqlmesh_bridge.translator import SQLMeshTranslator, partition_keys_in_window

if TYPE_CHECKING:
    from dagster_sqlmesh_bridge.events import AuditCollector, AuditFailure, RunRecord

log = logging.getLogger(__name__)

Event = dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult | dg.AssetObservation


def audit_check_result(
    key: dg.AssetKey, name: str, audit: AuditInfo, failing_rows: int, sql: str | None
) -> dg.AssetCheckResult:
    """A SQLMesh audit's verdict as a Dagster check result: blocking audits are ERROR."""
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=not failing_rows,
        severity=dg.AssetCheckSeverity.ERROR if audit.blocking else dg.AssetCheckSeverity.WARN,
        metadata={
            "failing_rows": failing_rows,
            "audit": f"{audit.name}({audit.args})",
            **({"sql": dg.MetadataValue.md(f"```sql\n{sql}\n```")} if sql else {}),
        },
    )


def keys_of_intervals(pdef: dg.PartitionsDefinition | None, intervals: list[tuple[int, int]]) -> list[str]:
    """The partition keys lying whole inside SQLMesh intervals (epoch ms), oldest first."""
    if pdef is None:
        return []
    keys: list[str] = []
    for start, end in merge(intervals):
        keys += partition_keys_in_window(pdef, _dt(start), _dt(end))
    return keys


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class Reporter:
    """Turns one model's recorded outcome into Dagster events."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        project: ProjectInfo,
        translator: SQLMeshTranslator,
        ctx: Any,
        collector: AuditCollector,
        window: tuple[datetime, datetime] | None,
        hook: ModelHook | None,
    ) -> None:
        self.context, self.project, self.translator, self.ctx = context, project, translator, ctx
        self.collector, self.window, self.hook = collector, window, hook
        self.prepared: dict[str, ModelReport] = {}

    def partitions(self, model: ModelInfo) -> list[str] | None:
        """The run's partitions in the keys of the model's own partitions definition (an
        hourly model's hours, a monthly model's months), None when the run names no range or
        the model is not time-partitioned."""
        if self.window is None or not model.time_partitioned:
            return None
        pdef = self.translator.get_partitions_def(model, self.project)
        if pdef is None:
            return None
        return partition_keys_in_window(pdef, *self.window) or None

    def prepare(self, fqn: str, record: RunRecord) -> None:
        """The report of a model SQLMesh just finished, made in SQLMesh's worker thread."""
        model = self.project.models.get(fqn)
        outcome = record.outcomes.get(fqn)
        if model is None or outcome is None or outcome.failed or not outcome.batches_done:
            return
        self.prepared[fqn] = self._report(model, sorted(set(outcome.intervals)))

    def model_results(self, model: ModelInfo, record: RunRecord) -> Iterator[Event]:
        context, translator = self.context, self.translator
        key = translator.get_asset_key(model)
        outcome = record.outcomes.get(model.fqn)
        if model.fqn in record.skipped or (outcome is None and model.fqn in record.errors):
            upstream = failed_upstream(self.project, model, record)
            context.log.warning(f"{model.name}: skipped, upstream model failed: {', '.join(upstream) or '?'}")
            return
        if outcome is None or not outcome.intervals:
            return  # nothing computed: the run says what SQLMesh already held (``held_results``)
        failures = [f for f in self.collector.failures() if f.model == model.fqn]
        runtime_error = outcome.failed and not failures
        selected_checks = context.selected_asset_check_keys
        audits = [] if runtime_error else self._audit_results(model, key, failures, selected_checks)
        if outcome.failed or not outcome.batches_done:
            yield from audits  # a blocking audit failed: no materialization for them to judge
            return
        intervals = sorted(set(outcome.intervals))
        metadata: dict[str, Any] = {
            "sqlmesh/batches": outcome.batches_done,
            "sqlmesh/duration_ms": outcome.duration_ms,
            "sqlmesh/fingerprint": model.fingerprint,
            "sqlmesh/audits_passed": outcome.audits_passed,
            "sqlmesh/audits_failed": outcome.audits_failed,
        }
        report = self.prepared.pop(model.fqn, None) or self._report(model, intervals)
        metadata.update(report.metadata)
        # audits and the hook's checks judge this materialization
        checks = [c for c in report.checks if dg.AssetCheckKey(key, c.check_name) in selected_checks]
        selected = key in context.selected_asset_keys
        pdef = self._partitions_def(model, selected)
        if pdef is None:
            metadata["sqlmesh/intervals"] = dg.MetadataValue.json([[_iso(s), _iso(e)] for s, e in intervals])
            if selected:
                yield dg.MaterializeResult(asset_key=key, metadata=metadata, check_results=[*audits, *checks])
            else:  # a restatement's downstream model, recomputed with the selection
                context.log_event(dg.AssetMaterialization(key, metadata=metadata, tags=_code(model)))
            return
        keys = keys_of_intervals(pdef, intervals)
        rows = report.partition_rows
        metadata["sqlmesh/intervals"] = dg.MetadataValue.json(
            [[_iso(s), _iso(e)] for s, e in merge(intervals)]
        )
        metadata.pop("dagster/row_count", None)  # the range's total: each partition gets its own
        metadata["sqlmesh/run_partitions"] = _span(keys)
        judged = [
            dg.AssetCheckResult(  # one verdict for the run's range, which it names
                asset_key=check.asset_key,
                check_name=check.check_name,
                passed=check.passed,
                severity=check.severity,
                description=check.description,
                metadata={**check.metadata, "sqlmesh/partitions": _span(keys)},
            )
            for check in [*audits, *checks]
        ]
        if selected and set(keys) >= set(self.partitions(model) or []):
            # the whole range computed: one output (what later steps of the run wait for), each
            # partition with its own row count
            for partition in keys:
                if partition in rows:
                    context.add_asset_metadata(_rows(rows[partition]), asset_key=key, partition_key=partition)
            yield dg.MaterializeResult(asset_key=key, metadata=metadata, check_results=judged)
            return
        for partition in keys:  # part of the range: exactly the partitions SQLMesh computed
            event = dg.AssetMaterialization(
                key,
                partition=partition,
                metadata={**metadata, **_rows(rows.get(partition))},
                tags=_code(model),
            )
            if selected:
                yield event
            else:
                context.log_event(event)
        yield from judged

    def held_results(
        self, model: ModelInfo, held: list[tuple[int, int]], fingerprint: str
    ) -> Iterator[Event]:
        """Partitions of the run's window that SQLMesh already holds (a plan or an earlier run
        built them) and this run did not compute: recorded as what they are, so Dagster shows
        what SQLMesh holds and catch-up stops asking for them."""
        key = self.translator.get_asset_key(model)
        note = "already built in SQLMesh's state (by a plan or an earlier run); nothing computed now"
        metadata = {"sqlmesh/already_built": True, "sqlmesh/fingerprint": fingerprint, "sqlmesh/note": note}
        pdef = self.translator.get_partitions_def(model, self.project) if self.window else None
        if pdef is None:
            yield dg.AssetMaterialization(key, metadata=metadata, tags={"dagster/code_version": fingerprint})
            return
        window_keys = set(self.partitions(model) or [])
        for partition in keys_of_intervals(pdef, held):
            if partition in window_keys:
                yield dg.AssetMaterialization(
                    key, partition=partition, metadata=metadata, tags={"dagster/code_version": fingerprint}
                )

    def _partitions_def(self, model: ModelInfo, selected: bool) -> dg.PartitionsDefinition | None:
        """The partitions a computed model's events name: its own, in a run of a partition range
        and for a model the run did not select (a restatement's downstream model, recomputed
        with an unpartitioned selection: an event without a partition would be refused by the
        backfill of a partitioned asset)."""
        if self.window is None and selected:
            return None
        return self.translator.get_partitions_def(model, self.project)

    def _partition_rows(self, model: ModelInfo, keys: list[str]) -> dict[str, int]:
        """Rows per partition in one query counting each partition's range (on SQLMesh's
        connection: only from SQLMesh's worker thread, as ``_report`` runs)."""
        pdef = self.translator.get_partitions_def(model, self.project)
        if not (keys and model.time_column and isinstance(pdef, dg.TimeWindowPartitionsDefinition)):
            return {}
        try:
            sqlmesh_model = self.ctx.get_model(model.fqn)
            dialect = sqlmesh_model.dialect
            from sqlglot import exp

            column = exp.to_identifier(model.time_column, quoted=True).sql(dialect=dialect)
            counts = []
            for partition in keys:
                window = pdef.time_window_for_partition_key(partition)
                low = sqlmesh_model.convert_to_time_column(window.start).sql(dialect=dialect)
                high = sqlmesh_model.convert_to_time_column(window.end).sql(dialect=dialect)
                counts.append(f"count(*) FILTER (WHERE {column} >= {low} AND {column} < {high})")
            row = self.ctx.engine_adapter.fetchone(f"SELECT {', '.join(counts)} FROM {model.sql_name()}")
            return {k: int(n) for k, n in zip(keys, row, strict=True)}
        except Exception as exc:
            log.warning("no row counts per partition for %s: %s", model.fqn, exc)
            return {}

    def _audit_results(
        self,
        model: ModelInfo,
        key: dg.AssetKey,
        failures: list[AuditFailure],
        selected: AbstractSet[dg.AssetCheckKey],
    ) -> list[dg.AssetCheckResult]:
        """The verdicts of the model's selected SQLMesh audits in this run."""
        results = []
        for index, audit in enumerate(model.audits):
            name = self.translator.get_check_name(model, audit, index)
            if dg.AssetCheckKey(key, name) not in selected:
                continue
            failed = [f for f in failures if f.index == index]
            sql = failed[0].sql if failed else None
            results.append(audit_check_result(key, name, audit, sum(f.count for f in failed), sql))
        return results

    def _report(self, model: ModelInfo, intervals: list[tuple[int, int]]) -> ModelReport:
        """The hook's report (a profile, checks), with a row count of what was computed when
        the hook gave none."""
        key = self.translator.get_asset_key(model)
        report = ModelReport()
        if self.hook is not None:
            try:
                report = self.hook.materialized(self.ctx, model, key, self.partitions(model), self.context)
            except Exception as exc:  # metadata informs, it is never a reason to fail the run
                log.warning("no report from the hook for %s: %s", model.fqn, exc)
        pdef = self._partitions_def(model, key in self.context.selected_asset_keys)
        if pdef is not None:
            keys = keys_of_intervals(pdef, intervals)
            if not all(k in report.partition_rows for k in keys):
                report.partition_rows = self._partition_rows(model, keys)
            return report
        if "dagster/row_count" in report.metadata:
            return report
        try:
            sql = f"SELECT count(*) FROM {model.sql_name()}{self._where(model, intervals)}"
            report.metadata["dagster/row_count"] = int(self.ctx.engine_adapter.fetchone(sql)[0])
        except Exception as exc:
            log.warning("no row count for %s: %s", model.fqn, exc)
        return report

    def _where(self, model: ModelInfo, intervals: list[tuple[int, int]]) -> str:
        """The computed range as SQLMesh's model would filter it (string time columns included)."""
        if not (self.window and model.time_partitioned and model.time_column and intervals):
            return ""
        from sqlglot import exp

        sqlmesh_model = self.ctx.get_model(model.fqn)
        dialect = sqlmesh_model.dialect
        low = sqlmesh_model.convert_to_time_column(intervals[0][0]).sql(dialect=dialect)
        high = sqlmesh_model.convert_to_time_column(intervals[-1][1]).sql(dialect=dialect)
        column = exp.to_identifier(model.time_column, quoted=True).sql(dialect=dialect)
        return f" WHERE {column} >= {low} AND {column} < {high}"


def _code(model: ModelInfo) -> dict[str, str]:
    return {"dagster/code_version": model.fingerprint} if model.fingerprint else {}


def _rows(count: int | None) -> dict[str, Any]:
    return {} if count is None else {"dagster/row_count": dg.MetadataValue.int(count)}


def _span(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]} ({len(keys)} partitions)" if keys else ""


def failed_upstream(project: ProjectInfo, model: ModelInfo, record: RunRecord) -> list[str]:
    """Names of the failed models upstream of ``model`` (transitively)."""
    failed: list[str] = []
    stack, seen = list(model.depends_on), set()
    while stack:
        fqn = stack.pop()
        if fqn in seen:
            continue
        seen.add(fqn)
        if fqn in record.errors or ((o := record.outcomes.get(fqn)) is not None and o.failed):
            failed.append(project.models[fqn].name if fqn in project.models else fqn)
        parent = project.models.get(fqn)
        if parent is not None:
            stack.extend(parent.depends_on)
    return sorted(failed)


def nothing_computed(
    context: dg.AssetExecutionContext,
    selected: list[ModelInfo],
    translator: SQLMeshTranslator,
    window: tuple[datetime, datetime] | None,
) -> Iterator[dg.AssetObservation]:
    """Say so in the run when SQLMesh found nothing to compute and held nothing of the window:
    a warning in the run's log and an observation per unpartitioned selected asset."""
    span = f" for [{window[0]:%Y-%m-%d %H:%M}, {window[1]:%Y-%m-%d %H:%M})" if window else ""
    message = f"SQLMesh computed nothing{span}: every selected interval was already done or not due yet"
    context.log.warning(message)
    for model in selected:
        if window is not None and model.time_partitioned:
            continue  # an observation would need a partition: the warning says it
        yield dg.AssetObservation(
            asset_key=translator.get_asset_key(model), metadata={"sqlmesh/nothing_computed": message}
        )


def raise_on_failure(
    context: dg.AssetExecutionContext, selected: list[ModelInfo], record: RunRecord, status: Any
) -> None:
    """Fail the step when a model failed, or when SQLMesh reported failure without naming one."""
    names = {m.fqn: m.name for m in selected}
    failed = {n: e for n, e in record.errors.items() if n in names}
    skipped = sorted(names[n] for n in record.skipped if n in names)
    if not failed:
        if getattr(status, "name", "") == "FAILURE":
            said = [f"{n}: {e}" for n, e in sorted(record.errors.items())]
            said = said or record.error_messages or record.warnings or ["no message"]
            raise dg.Failure(
                description="SQLMesh reported the run as failed without a failing model: " + "\n".join(said),
                metadata={"skipped_models": skipped},
            )
        return
    lines = [f"{names[n]}: {err}" for n, err in sorted(failed.items())]
    if skipped:
        lines.append(f"not run because an upstream model failed: {', '.join(skipped)}")
    raise dg.Failure(
        description="SQLMesh model(s) failed:\n" + "\n".join(lines),
        metadata={"failed_models": sorted(names[n] for n in failed), "skipped_models": skipped},
    )


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _iso(ms: int) -> str:
    return _dt(ms).strftime("%Y-%m-%d %H:%M")
