"""The platform's ``pipelines.SQLMeshProjectComponent``: the integration's component
(``dagster_sqlmesh_bridge.SQLMeshProjectComponent``) with what this deployment adds around it.

- the project is read with the deployment's settings (``SQLMESH_GATEWAY``, the data folder left
  out of its fingerprint, the environment as the cache salt);
- columns carry their governance classification (``PipelinesTranslator``);
- the bundled project's quality checks write to the deployment's warehouse (DuckDB locally,
  DuckLake in prod); ``PIPELINES_PROFILE=0`` leaves the checks out (the benchmark's baseline);
- the plan job checks raw history (``raw_contracts``) and writes a release record to the lake;
- runs of one local DuckDB file queue behind a file lock; the ``lake`` resource is added;
- catch-up reads ``PIPELINES_CATCH_UP_DAYS``/``_GRACE_HOURS``; daily runs carry the ``raw``
  ingestion assets they read.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import dagster as dg

from dagster_sqlmesh_bridge.component.component import SQLMeshProjectComponent as BaseComponent
from dagster_sqlmesh_bridge.component.component import component_for_dirs as base_component_for_dirs
from dagster_sqlmesh_bridge.component.transformation import PlanExtension
from pipelines.platform.settings import BUNDLED_SQLMESH_PROJECT, Settings

# the group of the platform's ingestion assets (daily): scheduled daily runs carry them along
INGESTION_GROUP = "raw"


@dataclass
class SQLMeshProjectComponent(BaseComponent):
    """The integration's component plus the platform's settings, governance, raw-history check,
    release records and lake (see the module docstring).

    .. code-block:: yaml

        type: pipelines.SQLMeshProjectComponent
        attributes:
          project: ../../shop/sqlmesh_project
          raw_contracts: pipelines.shop.sources.contracts:CONTRACTS
    """

    raw_contracts: Annotated[
        str | None,
        dg.Resolver.default(
            description="The raw sources the project reads, as `module:attribute` naming a mapping "
            "of source name to contract (with `retention_days`), e.g. "
            "`pipelines.shop.sources.contracts:CONTRACTS`. The plan job then refuses to rebuild days "
            "whose raw inputs are past retention, archived or gone. Unset: no raw-history check "
            "(the plan job says so in its log)."
        ),
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.automation = self.automation.model_copy(update=_automation_from_env(self.automation))

    def read_args(self) -> dict[str, Any]:
        settings = Settings.from_env()
        return {
            "gateway": self.gateway if self.gateway is not None else settings.sqlmesh_gateway,
            "exclude": [settings.data_dir],
            "cache_salt": settings.env,
        }

    def make_translator(self, project: Any) -> Any:
        from pipelines.component.translation import PipelinesTranslator
        from pipelines.governance import column_classifications

        return PipelinesTranslator(column_classifications(project), self.translation)

    def warehouse_for(self, project: Any) -> Any:
        if Path(project.project_dir).resolve() == BUNDLED_SQLMESH_PROJECT.resolve():
            from pipelines.platform.warehouse import warehouse_writer

            return warehouse_writer()
        return super().warehouse_for(project)

    def model_hook(self, project: Any, translator: Any) -> Any:
        if os.environ.get("PIPELINES_PROFILE", "1") == "0":  # the benchmark measures the checks' cost
            return None
        return super().model_hook(project, translator)

    def plan_extension(self) -> PlanExtension:
        from pipelines.component.plan_records import lake_plan_extension

        return lake_plan_extension(self.raw_contracts)

    def sqlmesh_resource(self) -> Any:
        from pipelines.platform.resources import sqlmesh_resource

        gateway = self.read_args()["gateway"]
        return sqlmesh_resource(Settings.from_env(), self.project, gateway, self.environment)

    def resources_for(self, project: Any) -> dict[str, Any]:
        from pipelines.platform.resources import shared_resources

        return {**super().resources_for(project), **shared_resources(Settings.from_env())}


def _automation_from_env(current: Any) -> dict[str, Any]:
    """The deployment's catch-up settings (``PIPELINES_CATCH_UP_*``) and the ingestion group."""
    update: dict[str, Any] = {}
    days = os.environ.get("PIPELINES_CATCH_UP_DAYS", "").strip()
    grace = os.environ.get("PIPELINES_CATCH_UP_GRACE_HOURS", "").strip()
    if days:
        update["catch_up_days"] = int(days)
    if grace:
        update["catch_up_grace_hours"] = float(grace)
    if update.get("catch_up_days", 1) < 1 or update.get("catch_up_grace_hours", 0) < 0:
        raise ValueError("PIPELINES_CATCH_UP_DAYS must be >= 1 and PIPELINES_CATCH_UP_GRACE_HOURS >= 0")
    if not current.upstream_groups:
        update["upstream_groups"] = [INGESTION_GROUP]
    return update


def component_for_dirs(
    dirs: Sequence[Path], name: str | None = None, **attributes: Any
) -> SQLMeshProjectComponent:
    """The platform's component built in Python (the ``SQLMESH_PROJECT_DIR`` override)."""
    return base_component_for_dirs(dirs, name, cls=SQLMeshProjectComponent, **attributes)
