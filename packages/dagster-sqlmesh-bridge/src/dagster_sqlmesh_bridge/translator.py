"""How a SQLMesh model becomes a Dagster ``AssetSpec``; subclass to change any piece."""

import re
from datetime import datetime

import dagster as dg
from croniter import croniter

from dagster_sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo
from dagster_sqlmesh_bridge.timeutil import UTC

_TAG_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_OWNER = re.compile(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


class SQLMeshTranslator:
    """Default mapping: key ``[schema, table]``, group = schema, daily partitions for time ranges."""

    def get_asset_key(self, model: ModelInfo) -> dg.AssetKey:
        """``[schema, table]``; a character Dagster's names refuse (a space) becomes ``_``."""
        return dg.AssetKey([_TAG_SAFE.sub("_", model.schema), _TAG_SAFE.sub("_", model.table)])

    def get_group_name(self, model: ModelInfo) -> str:
        """The schema; Dagster's group names take letters, digits and ``_`` only (``my schema``
        becomes ``my_schema``)."""
        return _GROUP_UNSAFE.sub("_", model.schema) or "default"

    def get_description(self, model: ModelInfo) -> str:
        return model.description or f"SQLMesh model {model.name} ({model.kind})"

    def get_owners(self, model: ModelInfo) -> list[str]:
        if not model.owner:
            return []
        owner = model.owner if _OWNER.match(model.owner) else f"team:{_TAG_SAFE.sub('_', model.owner)}"
        return [owner]

    def get_kinds(self, model: ModelInfo, project: ProjectInfo | None = None) -> set[str]:
        """``sqlmesh`` and the gateway's engine (``duckdb``, ``athena``, ``trino``...)."""
        engine = project.engine if project is not None else "duckdb"
        return {"sqlmesh", _TAG_SAFE.sub("_", engine)}

    def get_tags(self, model: ModelInfo) -> dict[str, str]:
        tags = {"sqlmesh/kind": model.kind.lower()}
        for tag in model.tags:
            tags[_TAG_SAFE.sub("_", tag)[:63]] = ""
        return tags

    def get_partitions_def(self, model: ModelInfo, project: ProjectInfo) -> dg.PartitionsDefinition | None:
        """Time partitions of the model's interval unit (hourly, daily, monthly...) from its start.

        Incremental-by-time models only; one definition object per (unit, start), so models that
        share both share it. A model without a start begins at the earliest start of the
        project's models of the same unit (SQLMesh's own default is relative: yesterday).
        """
        if not model.time_partitioned or not model.interval_unit:
            return None
        unit = model.interval_unit
        start = model_start(model) or self._earliest_start(project, unit) or resolve_start("yesterday")
        start = floor_to_unit(start, unit)
        cache = self.__dict__.setdefault("_partitions", {})
        if (unit, start) not in cache:
            cache[(unit, start)] = partitions_for_unit(unit, start)
        return cache[(unit, start)]

    def _earliest_start(self, project: ProjectInfo, unit: str) -> datetime | None:
        cache = self.__dict__.setdefault("_earliest", {})
        if (id(project), unit) not in cache:
            starts = [
                s
                for m in project.internal_models
                if m.time_partitioned and m.interval_unit == unit and (s := model_start(m)) is not None
            ]
            cache[(id(project), unit)] = (project, min(starts) if starts else None)
        return cache[(id(project), unit)][1]

    def get_column_schema(self, model: ModelInfo) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[dg.TableColumn(name, dtype, description=doc) for name, dtype, doc in model.columns]
        )

    def get_column_lineage(self, model: ModelInfo, project: ProjectInfo) -> dg.TableColumnLineage:
        deps_by_column = {}
        for column, parents in model.column_lineage.items():
            deps = [
                dg.TableColumnDep(asset_key=self.get_asset_key(project.models[fqn]), column_name=col)
                for fqn, col in parents
                if fqn in project.models
            ]
            deps_by_column[column] = deps
        return dg.TableColumnLineage(deps_by_column=deps_by_column)

    def get_metadata(self, model: ModelInfo, project: ProjectInfo) -> dict[str, object]:
        metadata: dict[str, object] = {
            "dagster/column_schema": self.get_column_schema(model),
            "dagster/column_lineage": self.get_column_lineage(model, project),
            "dagster/table_name": f"{model.catalog}.{model.schema}.{model.table}",
            "sqlmesh/model_name": model.name,
            "sqlmesh/cron": model.cron,
        }
        if model.path:
            metadata["dagster/code_references"] = dg.CodeReferencesMetadataValue(
                code_references=[dg.LocalFileCodeReference(file_path=model.path)]
            )
        return metadata

    def get_automation_condition(self, model: ModelInfo) -> dg.AutomationCondition | None:
        return None

    def get_check_name(self, model: ModelInfo, audit: AuditInfo, index: int) -> str:
        """Audit names repeat (``not_null`` twice): later ones get a numeric suffix."""
        earlier = [a.name for a in model.audits[:index]]
        suffix = f"_{earlier.count(audit.name) + 1}" if audit.name in earlier else ""
        return _TAG_SAFE.sub("_", f"{audit.name}{suffix}").replace(".", "_").replace("-", "_")

    def get_check_specs(self, model: ModelInfo, project: ProjectInfo) -> list[dg.AssetCheckSpec]:
        key = self.get_asset_key(model)
        return [
            dg.AssetCheckSpec(
                name=self.get_check_name(model, audit, i),
                asset=key,
                description=f"SQLMesh audit {audit.name}({audit.args})"
                + ("" if audit.blocking else " — non-blocking"),
                blocking=audit.blocking,
                metadata={"sqlmesh/audit": audit.name, "sqlmesh/blocking": audit.blocking},
            )
            for i, audit in enumerate(model.audits)
        ]

    def get_external_asset_spec(self, model: ModelInfo, project: ProjectInfo) -> dg.AssetSpec:
        """A table the project reads but does not build: an external asset (no materialize button)."""
        metadata: dict[str, object] = {"sqlmesh/model_name": model.name}
        if model.columns:
            metadata["dagster/column_schema"] = self.get_column_schema(model)
        if model.missing:
            metadata["sqlmesh/note"] = "referenced by a model, defined nowhere in the project"
        return dg.AssetSpec(
            key=self.get_asset_key(model),
            description=model.description or f"External table {model.name} (read by SQLMesh models)",
            group_name=self.get_group_name(model),
            kinds=self.get_kinds(model, project),
            metadata=metadata,
        )

    def get_asset_spec(self, model: ModelInfo, project: ProjectInfo) -> dg.AssetSpec:
        # EMBEDDED models have no table (they are inlined): depend on what they read instead
        deps = [
            self.get_asset_key(project.models[d]) for d in project.asset_parents(model) if d in project.models
        ]
        return dg.AssetSpec(
            key=self.get_asset_key(model),
            deps=deps,
            description=self.get_description(model),
            group_name=self.get_group_name(model),
            owners=self.get_owners(model),
            tags=self.get_tags(model),
            kinds=self.get_kinds(model, project),
            code_version=model.fingerprint or None,
            metadata=self.get_metadata(model, project),
            partitions_def=self.get_partitions_def(model, project),
            automation_condition=self.get_automation_condition(model),
            skippable=True,
        )


def resolve_start(start: str | int) -> datetime:
    """A model start as SQLMesh reads it: ISO dates, ``1 week ago``, ``yesterday``, epoch ms.

    Plain ISO dates are read here (importing SQLMesh costs seconds on the cached load path);
    everything else goes through SQLMesh's own parser.
    """
    if isinstance(start, str) and not start.isdigit():
        try:
            parsed = datetime.fromisoformat(start)
        except ValueError:
            pass
        else:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    from sqlmesh.utils.date import to_datetime

    value: str | int = int(start) if isinstance(start, str) and start.isdigit() else start
    return to_datetime(value).astimezone(UTC)


def model_start(model: ModelInfo) -> datetime | None:
    return resolve_start(model.start) if model.start else None


def floor_to_unit(moment: datetime, unit: str) -> datetime:
    """The start of the interval of ``unit`` that contains ``moment`` (SQLMesh's cron floor)."""
    if unit == "year":
        return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    step = _MINUTES[unit]
    return moment.replace(minute=moment.minute - moment.minute % step, second=0, microsecond=0)


_MINUTES = {"half_hour": 30, "quarter_hour": 15, "five_minute": 5}


def partitions_for_unit(unit: str, start: datetime) -> dg.TimeWindowPartitionsDefinition:
    """Dagster time partitions whose windows are exactly SQLMesh's intervals of ``unit``."""
    if unit == "day":
        return dg.DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"))
    if unit == "hour":
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"))
    if unit == "month":
        return dg.MonthlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"))
    if unit == "year":
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule="0 0 1 1 *", start=start.strftime("%Y-%m-%d"), fmt="%Y-%m-%d"
        )
    if unit in _MINUTES:
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=f"*/{_MINUTES[unit]} * * * *",
            start=start.strftime("%Y-%m-%d-%H:%M"),
            fmt="%Y-%m-%d-%H:%M",
        )
    raise ValueError(f"unknown SQLMesh interval unit {unit!r}")


def partition_keys_in_window(
    partitions_def: dg.PartitionsDefinition, start: datetime, end: datetime
) -> list[str]:
    """Keys of the time partitions lying whole inside ``[start, end)``, oldest first: a run's
    window in the keys of one model's own definition (hours of a day, months of a range...)."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return []
    cron = partitions_def.get_cron_schedule()
    first, end = _utc(max(start, partitions_def.start)), _utc(end)
    ends = croniter(cron, first)
    keys = []
    while (stop := ends.get_next(datetime)) <= end:
        begin = croniter(cron, stop).get_prev(datetime)
        if begin >= first:
            keys.append(begin.strftime(partitions_def.fmt))
    return keys


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
