"""Reporting: the static shop report, re-rendered whenever the marts it reads change."""

import contextlib
from collections.abc import Iterable

import dagster as dg

from pipelines.reporting.report import render_report, write_report
from pipelines.resources import LakeResource
from pipelines.settings import Settings
from pipelines.warehouse import warehouse

REPORT_ASSET_KEY = dg.AssetKey(["reports", "shop_report"])
MART_DEPS = [
    dg.AssetKey(["marts", "daily_revenue"]),
    dg.AssetKey(["marts", "category_sales"]),
    dg.AssetKey(["marts", "web_funnel"]),
    dg.AssetKey(["marts", "fct_orders"]),
]


def known_check_keys(context: dg.AssetExecutionContext) -> set[dg.AssetCheckKey]:
    """Check keys of the code location (set in deployed runs), else of this run's job."""
    keys = set(context.job_def.asset_layer.asset_graph.asset_check_keys)
    # In-process runs (tests, dg.materialize) have no repository: keep the job's keys then.
    with contextlib.suppress(Exception):
        keys |= set(context.repository_def.asset_graph.asset_check_keys)
    return keys


def latest_mart_checks(
    instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey]
) -> dict[str, dict[str, object]]:
    """The latest result of every check on a marts asset, for the report's quality section."""
    mart_keys = [key for key in check_keys if key.asset_key.path[:1] == ["marts"]]
    if not mart_keys:
        return {}
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(mart_keys)
    quality: dict[str, dict[str, object]] = {}
    for key, record in records.items():
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        evaluation = record.evaluation
        if evaluation is not None:
            quality[name] = {
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
                "description": evaluation.description or "",
            }
        else:
            quality[name] = {"status": record.status.value}
    return quality


@dg.asset(
    key=REPORT_ASSET_KEY,
    group_name="reports",
    kinds={"html", "plotly"},
    deps=MART_DEPS,
    automation_condition=dg.AutomationCondition.eager(),
    description="Self-contained HTML report (KPIs, charts, latest days, data quality) in the lake.",
    owners=["team:analytics"],
)
def shop_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    try:
        quality = latest_mart_checks(context.instance, known_check_keys(context))
    except Exception as exc:  # noqa: BLE001 - a report without quality beats no report
        context.log.warning(f"asset check results unavailable for the report: {exc}")
        quality = {}
    with warehouse(Settings.from_env(), read_only=True) as con:
        html = render_report(con, quality)
    the_lake = lake.get()
    key = write_report(the_lake, html)
    location = the_lake.url(key)
    link = dg.MetadataValue.url(location) if the_lake.is_s3 else dg.MetadataValue.path(location)
    size = len(html.encode("utf-8"))
    context.log.info(f"shop report written to {location} ({size} bytes)")
    return dg.MaterializeResult(
        metadata={
            "report": link,
            "lake_key": key,
            "size_bytes": dg.MetadataValue.int(size),
            "quality_checks": dg.MetadataValue.int(len(quality)),
        }
    )


defs = dg.Definitions(assets=[shop_report])
