"""Quality checks made in the SQLMesh step, the moment SQLMesh finishes each model.

Each model's new partitions are profiled with one SQL aggregate on SQLMesh's own connection,
judged against the shared history, appended to it, and the verdicts travel with the model's
materialization (``MaterializeResult.check_results``). A step per model's checks cost Dagster
more than the checks themselves (docs/benchmarks.md, "Checks on a generated 100-model project").

Blocking keeps its meaning: an ERROR check that fails fails the SQLMesh step once every model is
reported, so the steps after it (the report...) do not run. Checks selected without their
assets judge what the warehouse already holds, through a connection of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from dagster_sqlmesh_bridge import ModelInfo, ModelReport
from dagster_sqlmesh_bridge.quality.checks import (
    Connect,
    judge_profiles,
    quality_check_specs,
    rule_partitions,
    run_profile_checks,
    run_range,
)
from dagster_sqlmesh_bridge.quality.grain import grain_of
from dagster_sqlmesh_bridge.quality.history import ProfileStore, key_of
from dagster_sqlmesh_bridge.quality.profile import (
    TableProfile,
    asset_key_string,
    describe,
    latest_partition,
    profile_materialization,
    profile_metadata,
)
from dagster_sqlmesh_bridge.quality.rules import PROFILE_CHECKS, WARN, QualityRule
from dagster_sqlmesh_bridge.quality.schema_change import (
    SCHEMA_CHECK,
    columns_of,
    latest_schemas,
    run_start,
    schema_change_before,
    schema_change_of,
    schema_change_result,
)

# kinds that are not profiled: a view would run its whole query, an embedded model is no table
NOT_PROFILED = {"VIEW", "EMBEDDED"}


class QualityHook:
    """The SQLMesh step's profile and quality checks for every model of a project.

    ``rules`` are the profiled models' rules (by asset key); every model in ``keys`` gets a
    schema-change check. ``profile`` off (the benchmark's baseline) leaves out profiles and
    checks alike. ``connect`` opens a writable warehouse connection for checks run alone.
    """

    def __init__(self, rules: Sequence[QualityRule], keys: Sequence[dg.AssetKey], connect: Connect) -> None:
        self.rules = {r.asset_key: r for r in rules}
        self.keys = list(dict.fromkeys([*self.rules, *keys]))
        self.connect = connect
        # per run: each asset's newest materialization (run id, columns) when the run began
        self._latest: dict[str, dict[dg.AssetKey, tuple[str, dict[str, str] | None]]] = {}

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return [spec for key in self.keys for spec in quality_check_specs(key, self.rules.get(key))]

    def materialized(
        self,
        ctx: Any,
        model: ModelInfo,
        key: dg.AssetKey,
        partitions: list[str] | None,
        context: dg.AssetExecutionContext,
    ) -> ModelReport:
        con = ctx.engine_adapter.cursor
        report = ModelReport()
        profiles: list[TableProfile] | None = None
        error: Exception | None = None
        try:
            if model.kind in NOT_PROFILED:
                report.metadata = _column_schema(con, model)
            else:
                profiles = _profile(con, model, partitions)
                report.metadata = profile_metadata(profiles, {n: doc for n, _, doc in model.columns if doc})
                report.partition_rows = {p.partition: p.row_count for p in profiles if p.partition}
        except Exception as exc:  # a profile informs; it never fails the run (an ERROR check may)
            error = exc
        rule = self.rules.get(key)
        if rule is not None:
            judged = False
            if profiles is not None:
                try:
                    report.checks += judge_profiles(
                        rule, {key_of(p): p for p in profiles}, con, ProfileStore(con), record=False
                    )
                    judged = True
                except Exception as exc:  # the history unreachable, a sample query failing...
                    error = exc
            if not judged and error is not None:
                report.checks += cannot_compute(rule, model.sql_name(), error)
        if error is not None:  # once per model, whatever number of checks it cost
            _cannot_compute_log(context, model, error)
        if profiles:
            try:  # tagged with the run: a check run alone later finds what this run saw
                ProfileStore(con).record_many({asset_key_string(key): profiles}, run_id=context.run_id)
            except Exception as exc:
                context.log.warning(f"profiles of {model.name} not kept in the history: {_error_text(exc)}")
        if key in self.keys:
            report.checks.append(self._schema_change(context, key, report.metadata))
        return report

    def _schema_change(
        self, context: dg.AssetExecutionContext, key: dg.AssetKey, metadata: dict[str, Any]
    ) -> dg.AssetCheckResult:
        """The columns about to be recorded against the asset's newest materialization, read for
        every asset of the project with one query per run: each model is materialized once per
        run, after this, so the newest one is from an earlier run (a retried step's own first
        attempt is skipped with a query of its own)."""
        new = columns_of(metadata.get("dagster/column_schema"))
        run_id = context.run_id
        if run_id not in self._latest:
            self._latest = {run_id: latest_schemas(context.instance, self.keys)}
        latest_run, old = self._latest[run_id].get(key, (None, None))
        if latest_run != run_id:
            return schema_change_of(key, old, new, WARN)
        before = run_start(context.instance, run_id)
        return schema_change_before(context.instance, key, new, before, WARN)

    def checks_alone(
        self, context: dg.AssetExecutionContext, models: list[tuple[ModelInfo, dg.AssetKey]]
    ) -> Iterator[dg.AssetCheckResult]:
        selected: dict[dg.AssetKey, set[str]] = {}
        for check_key in context.selected_asset_check_keys:
            selected.setdefault(check_key.asset_key, set()).add(check_key.name)
        run = run_range(context)
        results: list[dg.AssetCheckResult] = []
        profiled = [
            (m, k) for m, k in models if k in self.rules and selected.get(k, set()) & set(PROFILE_CHECKS)
        ]
        if profiled:
            with self.connect() as con:  # one connection for the history and every query
                store = ProfileStore(con)
                for model, key in profiled:
                    rule = self.rules[key]
                    parts = rule_partitions(rule, run)
                    try:
                        results += run_profile_checks(rule, parts, con, store, selected[key])
                    except Exception as exc:  # said on the checks (and once in the log), never a crash
                        _cannot_compute_log(context, model, exc)
                        failed = cannot_compute(rule, model.sql_name(), exc)
                        results += [r for r in failed if r.check_name in selected[key]]
        for _, key in models:
            if SCHEMA_CHECK in selected.get(key, set()) and key in self.keys:
                results.append(schema_change_result(context.instance, key, WARN))
        yield from results  # after the warehouse is closed again


def _profile(con: Any, model: ModelInfo, partitions: list[str] | None) -> list[TableProfile]:
    """What the materialization wrote: one profile per partition of the model's own grain
    (one SQL aggregate), or the whole table for a model without time partitions."""
    table = model.sql_name()
    column, grain, keys = None, grain_of(model.interval_unit), None
    if model.time_partitioned:
        column = model.time_column
        keys = grain.run_keys(partitions[0], partitions[-1]) if partitions else None
        if not keys:  # a run without a range: the newest partition is what it wrote
            latest = latest_partition(con, table, column, grain)
            keys = [latest] if latest else None
    return profile_materialization(con, table, column, keys, grain)


def _column_schema(con: Any, model: ModelInfo) -> dict[str, Any]:
    """A view's columns as the warehouse has them (for its schema-change check), without
    running the view's query."""
    table = model.sql_name()
    docs = {name: doc for name, _, doc in model.columns if doc}
    found = describe(con, table)
    columns = [dg.TableColumn(name, dtype, description=docs.get(name)) for name, dtype in found]
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _cannot_compute_log(context: dg.AssetExecutionContext, model: ModelInfo, error: Exception) -> None:
    context.log.warning(f"quality checks of {model.name} could not compute: {_error_text(error)}")


def cannot_compute(rule: QualityRule, table: str, error: Exception) -> list[dg.AssetCheckResult]:
    """The profile checks' results when their SQL failed: failed, with the rule's own severity
    (an ERROR check stays blocking: downstream must not run on unchecked data), and the error and
    the model in the metadata, where the UI shows them."""
    text = _error_text(error)
    first_line = text.splitlines()[0][:300] if text else type(error).__name__
    return [
        dg.AssetCheckResult(
            asset_key=rule.asset_key,
            check_name=check,
            passed=False,
            severity=rule.severity_of(check),
            description=f"could not compute {check} of {rule.model or table}: {first_line}",
            metadata={
                "model": dg.MetadataValue.text(rule.model or table),
                "table": dg.MetadataValue.text(table),
                "error": dg.MetadataValue.text(text),
                "computed": False,
            },
        )
        for check in PROFILE_CHECKS
        if check in rule.checks
    ]
