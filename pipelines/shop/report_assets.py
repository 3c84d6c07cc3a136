"""Reporting: the static shop report, re-rendered whenever the marts it reads change.

With ``PIPELINES_EVIDENCE=1`` an Evidence site (``reports/evidence/``) is built and published
to ``reports/site/`` as well (``pipelines/shop/reporting/evidence.py`` says why it is optional).
"""

import contextlib
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import warehouse
from pipelines.shop.reporting import evidence
from pipelines.shop.reporting.report import render_report, write_report

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


EVIDENCE_ASSET_KEY = dg.AssetKey(["reports", "evidence_site"])


@dg.asset(
    key=EVIDENCE_ASSET_KEY,
    group_name="reports",
    kinds={"evidence", "html"},
    deps=[dg.AssetKey(["marts", name]) for name in evidence.MARTS_READ],
    # eager: runs when one of the marts it reads was updated, not on every run
    automation_condition=dg.AutomationCondition.eager(),
    description="Evidence site (Markdown + SQL pages over the marts) published to reports/site/.",
    owners=["team:analytics"],
)
def evidence_site(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evidence-") as work:
        with warehouse(Settings.from_env(), read_only=True) as con:
            site, timings = evidence.build_site(con, Path(work))
        the_lake = lake.get()
        published = evidence.publish_site(the_lake, site, evidence.new_version(context.run_id))
    location = the_lake.url(evidence.INDEX_KEY)
    link = dg.MetadataValue.url(location) if the_lake.is_s3 else dg.MetadataValue.path(location)
    context.log.info(f"Evidence site {published.version} published under {published.prefix}")
    return dg.MaterializeResult(
        metadata={
            "site": link,
            "version": published.version,
            "prefix": published.prefix,
            "files": dg.MetadataValue.int(published.files),
            "size_bytes": dg.MetadataValue.int(published.bytes),
            "build_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 1)),
            **{f"{step}_seconds": dg.MetadataValue.float(round(s, 1)) for step, s in timings.items()},
        }
    )


def reporting_assets() -> list[dg.AssetsDefinition]:
    """The Plotly report always; the Evidence site only when ``PIPELINES_EVIDENCE=1``."""
    return [shop_report, evidence_site] if evidence.enabled() else [shop_report]


def build_defs() -> dg.Definitions:
    return dg.Definitions(assets=reporting_assets())


defs = build_defs()
