"""The shop report on a real warehouse: right numbers, self-contained, no PII, charts that draw."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import plotly.offline
import pytest

from pipelines.platform.lake import Lake
from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import connect
from pipelines.shop.report_assets import MART_DEPS, latest_mart_checks, shop_report
from pipelines.shop.reporting import REPORT_KEY, render_report, write_report

# Until conftest.py registers it for the whole suite (harmless once it does).

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
OUTPUT_DIR = Path(__file__).resolve().parents[1] / "test-output"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
REMOTE_REF = re.compile(
    r"<(?:script|link|img|iframe|source|embed)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//",
    re.IGNORECASE,
)
QUALITY = {
    "marts/daily_revenue:not_null": {"passed": True, "severity": "ERROR"},
    "marts/web_funnel:conversion_in_range": {"passed": False, "severity": "WARN"},
}


@pytest.fixture(scope="module")
def con(built_warehouse: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(built_warehouse, read_only=True)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def html(con: duckdb.DuckDBPyConnection) -> str:
    return render_report(con, QUALITY)


def kpi(html: str, key: str) -> tuple[str, str]:
    """(data-value, displayed text) of one KPI card."""
    match = re.search(
        rf'data-kpi="{key}" data-value="([^"]*)">\s*<div class="label">[^<]*</div>\s*'
        r'<div class="value">([^<]*)</div>',
        html,
    )
    assert match, f"KPI {key} missing from the report"
    return match.group(1), match.group(2)


def test_kpis_match_sql(con: duckdb.DuckDBPyConnection, html: str) -> None:
    revenue, orders = con.execute("SELECT sum(revenue_usd), sum(orders) FROM marts.daily_revenue").fetchone()  # type: ignore[misc]
    fct_orders, aov = con.execute(
        "SELECT count(*), sum(order_total_usd) FILTER (WHERE status IN ('placed','shipped')) "
        "/ count(*) FILTER (WHERE status IN ('placed','shipped')) FROM marts.fct_orders"
    ).fetchone()  # type: ignore[misc]
    conversion = con.execute(
        "SELECT sum(checkout_sessions)::DOUBLE / sum(sessions) FROM marts.web_funnel"
    ).fetchone()[0]  # type: ignore[index]
    assert orders == fct_orders > 0

    value, text = kpi(html, "total_revenue")
    assert float(value) == pytest.approx(revenue, abs=0.005)
    assert text == f"${revenue:,.2f}"
    value, text = kpi(html, "orders")
    assert int(value) == orders and text == f"{orders:,}"
    value, text = kpi(html, "avg_order_value")
    assert float(value) == pytest.approx(aov, abs=0.005)
    assert text == f"${aov:,.2f}"
    value, text = kpi(html, "conversion")
    assert float(value) == pytest.approx(conversion, abs=0.00005)
    assert text == f"{conversion * 100:.2f}%"


def test_latest_days_and_quality_sections(con: duckdb.DuckDBPyConnection, html: str) -> None:
    latest = html[html.index('id="latest-days"') : html.index('id="data-quality"')]
    for day, orders in con.execute("SELECT order_date, orders FROM marts.daily_revenue").fetchall():
        assert f"<td>{day}</td><td>{orders:,}</td>" in latest
    from pipelines_tests.warehouse_fixture import DEMO_DAYS

    assert len(re.findall(r"<tr><td>\d{4}-\d{2}-\d{2}</td>", latest)) == len(DEMO_DAYS)
    quality = html[html.index('id="data-quality"') :]
    assert "2 checks" in quality and "1 failed" in quality
    assert re.search(r'conversion_in_range</td><td class="failed">failed</td><td>WARN', quality)
    assert re.search(r'not_null</td><td class="passed">passed</td><td>ERROR', quality)
    empty = render_report(con, None)
    assert "No data-quality results were available" in empty


def test_report_is_self_contained(html: str) -> None:
    assert not REMOTE_REF.search(html), REMOTE_REF.search(html)
    assert "@import" not in html
    bundle = plotly.offline.get_plotlyjs()
    assert html.count(bundle) == 1, "plotly.js must be inlined exactly once"
    assert html.count('class="plotly-graph-div"') == 3


def test_report_has_no_pii(built_warehouse: Settings, html: str) -> None:
    # The inlined plotly.js carries its authors' addresses in licence comments: not data.
    data_part = html.replace(plotly.offline.get_plotlyjs(), "")
    assert not EMAIL.findall(data_part)
    # And none of the real addresses from the raw zone leak anywhere in the file.
    raw = Lake(built_warehouse.lake_uri).url("raw/customers") + "/ds=*/data.parquet"
    emails = [row[0] for row in duckdb.sql(f"SELECT email FROM read_parquet('{raw}')").fetchall()]
    assert emails
    assert not set(emails) & set(EMAIL.findall(html))


def test_write_report_publishes_atomically(tmp_path: Path, html: str) -> None:
    lake = Lake(str(tmp_path / "lake"))
    assert write_report(lake, html) == REPORT_KEY
    assert lake.get_bytes(REPORT_KEY).decode("utf-8") == html
    write_report(lake, "<html>v2</html>")
    assert lake.get_bytes(REPORT_KEY) == b"<html>v2</html>"
    assert [o.key for o in lake.list("reports")] == [REPORT_KEY]  # no temp file left behind


def test_asset_materializes_report_into_lake(
    built_warehouse: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The asset finds the warehouse the way a deployment does: from the environment.
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(built_warehouse.data_dir))
    monkeypatch.setenv("PIPELINES_LAKE_URI", built_warehouse.lake_uri)
    spec = shop_report.specs_by_key[dg.AssetKey(["reports", "shop_report"])]
    assert shop_report.group_names_by_key[spec.key] == "reports"
    assert {"html", "plotly"} <= set(spec.kinds)
    assert {dep.asset_key for dep in spec.deps} == set(MART_DEPS)
    assert spec.automation_condition is not None

    result = dg.materialize([shop_report], resources={"lake": LakeResource(uri=built_warehouse.lake_uri)})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    lake = Lake(built_warehouse.lake_uri)
    body = lake.get_bytes(REPORT_KEY)
    assert metadata["report"].value == lake.url(REPORT_KEY)
    assert metadata["size_bytes"].value == len(body)
    assert b'data-kpi="total_revenue"' in body


def test_quality_comes_from_latest_asset_checks(
    con: duckdb.DuckDBPyConnection, ephemeral_instance: dg.DagsterInstance
) -> None:
    @dg.asset_check(asset=dg.AssetKey(["marts", "daily_revenue"]), name="revenue_positive")
    def revenue_positive() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description="negative day"
        )

    instance = ephemeral_instance
    specs = [dg.AssetSpec(key) for key in MART_DEPS]
    ran = dg.materialize(
        [revenue_positive, *specs],
        selection=dg.AssetSelection.checks(revenue_positive),
        instance=instance,
    )
    assert ran.success
    quality = latest_mart_checks(instance, [revenue_positive.check_key])
    assert quality == {
        "marts/daily_revenue:revenue_positive": {
            "passed": False,
            "severity": "WARN",
            "description": "negative day",
        }
    }
    assert 'revenue_positive</td><td class="failed">failed' in render_report(con, quality)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tmp_path: Path, html: str) -> None:
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "shop_report.html"
    page_file.write_text(html, encoding="utf-8")
    OUTPUT_DIR.mkdir(exist_ok=True)
    remote: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: remote.append(r.url) if not r.url.startswith("file:") else None)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_file.as_uri())
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3",
                timeout=30_000,
            )
            charts = page.evaluate(
                """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => {
                    const box = d.querySelector('.main-svg').getBoundingClientRect();
                    return {id: d.id, width: box.width, height: box.height,
                            traces: d.querySelectorAll('g.trace').length,
                            paths: d.querySelectorAll('g.trace path').length};
                })"""
            )
            page.screenshot(path=str(OUTPUT_DIR / "report.png"), full_page=True)
        finally:
            browser.close()
    assert [c["id"] for c in charts] == [
        "chart-daily-revenue",
        "chart-category-sales",
        "chart-web-funnel",
    ]
    for chart in charts:
        assert chart["width"] > 0 and chart["height"] > 0, chart
        assert chart["traces"] > 0 and chart["paths"] > 0, chart
    assert not errors
    assert not remote, f"the report fetched {remote}"
    assert (OUTPUT_DIR / "report.png").stat().st_size > 10_000
