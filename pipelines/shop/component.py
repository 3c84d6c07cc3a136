"""``pipelines.shop.ShopComponent``: the bundled example's sources, report and governance jobs.

Declared next to its SQLMesh project in ``pipelines/defs/shop/defs.yaml``; deleting that folder
leaves the platform and any other project loading without it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import dagster as dg


@dataclass
class ShopComponent(dg.Component, dg.Resolvable):
    """The shop's ingestion assets (database, file drops, rates API), its landing-file sensor,
    the report, and the governance jobs (retention, SQLMesh janitor, audit log) of its project."""

    project: Annotated[
        Path,
        dg.Resolver(
            lambda context, value: context.resolve_source_relative_path(
                context.resolve_value(value, as_type=str)
            ),
            model_field_type=str,
            description="The shop's SQLMesh project (its governance.yaml is validated at load).",
        ),
    ]
    landing_sensor: bool = True

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from pipelines.platform.configured_project import load_configured_project, settings_from_env
        from pipelines.shop import governance_jobs as governance
        from pipelines.shop import ingestion, report_assets
        from pipelines.shop.landing_sensor import build_landing_sensor, landing_job
        from pipelines.shop.resources import shop_resources

        settings, _ = settings_from_env()
        project = load_configured_project(settings, [self.project.resolve()])
        parts = [
            ingestion.defs,
            report_assets.build_defs(),
            governance.build_defs(project),
            dg.Definitions(resources=shop_resources(settings)),
        ]
        if self.landing_sensor:
            job = landing_job()
            parts.append(dg.Definitions(jobs=[job], sensors=[build_landing_sensor(job)]))
        return dg.Definitions.merge(*parts)
