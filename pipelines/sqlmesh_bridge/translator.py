"""How a SQLMesh model becomes a Dagster ``AssetSpec``; subclass to change any piece."""

import re
from datetime import date

import dagster as dg

from pipelines.sqlmesh_bridge.project import AuditInfo, ModelInfo, ProjectInfo

_TAG_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_OWNER = re.compile(r"^(team:[A-Za-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


class SQLMeshTranslator:
    """Default mapping: key ``[schema, table]``, group = schema, daily partitions for time ranges."""

    def get_asset_key(self, model: ModelInfo) -> dg.AssetKey:
        return dg.AssetKey([model.schema, model.table])

    def get_group_name(self, model: ModelInfo) -> str:
        return model.schema

    def get_description(self, model: ModelInfo) -> str:
        return model.description or f"SQLMesh model {model.name} ({model.kind})"

    def get_owners(self, model: ModelInfo) -> list[str]:
        if not model.owner:
            return []
        owner = model.owner if _OWNER.match(model.owner) else f"team:{_TAG_SAFE.sub('_', model.owner)}"
        return [owner]

    def get_kinds(self, model: ModelInfo) -> set[str]:
        return {"sqlmesh", "duckdb"}

    def get_tags(self, model: ModelInfo) -> dict[str, str]:
        tags = {"sqlmesh/kind": model.kind.lower()}
        for tag in model.tags:
            tags[_TAG_SAFE.sub("_", tag)[:63]] = ""
        return tags

    def get_partitions_def(self, model: ModelInfo, project: ProjectInfo) -> dg.PartitionsDefinition | None:
        """Daily partitions for daily time-range models, starting at the earliest model start."""
        if not model.time_partitioned or model.interval_unit != "day":
            return None
        return self._project_daily_partitions(project)

    def _project_daily_partitions(self, project: ProjectInfo) -> dg.PartitionsDefinition:
        """One definition per project, computed once (asked for once per model)."""
        cache = self.__dict__.setdefault("_daily_partitions", {})
        if id(project) not in cache:
            starts = [
                date.fromisoformat(m.start[:10])
                for m in project.internal_models
                if m.time_partitioned and m.interval_unit == "day" and m.start
            ]
            start = min(starts).isoformat() if starts else "2020-01-01"
            cache[id(project)] = (project, dg.DailyPartitionsDefinition(start_date=start))
        return cache[id(project)][1]

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

    def get_asset_spec(self, model: ModelInfo, project: ProjectInfo) -> dg.AssetSpec:
        deps = [self.get_asset_key(project.models[d]) for d in model.depends_on if d in project.models]
        return dg.AssetSpec(
            key=self.get_asset_key(model),
            deps=deps,
            description=self.get_description(model),
            group_name=self.get_group_name(model),
            owners=self.get_owners(model),
            tags=self.get_tags(model),
            kinds=self.get_kinds(model),
            code_version=model.fingerprint or None,
            metadata=self.get_metadata(model, project),
            partitions_def=self.get_partitions_def(model, project),
            automation_condition=self.get_automation_condition(model),
            skippable=True,
        )
