"""The shop report: one self-contained HTML file (plotly.js inlined) built from the marts.

Everything is read with small SQL aggregates, so the report costs the same whether the marts
hold a week or years of orders. The file opens offline: no script, style or font is fetched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import plotly.graph_objects as go
import plotly.io as pio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from plotly.subplots import make_subplots

from pipelines.platform.lake import Lake

REPORT_KEY = "reports/shop_report.html"
TEMPLATE = "shop_report.html.j2"
LATEST_DAYS = 14
CHART_DAYS = 366
PLACED = "('placed', 'shipped')"

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Kpis:
    """Headline numbers over every day in the marts; ``None`` where there is no data yet."""

    total_revenue_usd: float | None
    orders: int
    avg_order_value_usd: float | None
    conversion_rate: float | None
    first_day: date | None
    last_day: date | None


@dataclass(frozen=True)
class QualityRow:
    name: str
    status: str  # "passed" | "failed" | "unknown"
    severity: str
    description: str


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def query_kpis(con: duckdb.DuckDBPyConnection) -> Kpis:
    """KPIs the way finance reads them: revenue and AOV count placed and shipped orders only."""
    revenue, orders, first_day, last_day = con.execute(
        "SELECT round(sum(revenue_usd), 2), coalesce(sum(orders), 0), min(order_date), "
        "max(order_date) FROM marts.daily_revenue"
    ).fetchone()  # type: ignore[misc]
    (aov,) = con.execute(
        f"SELECT round(avg(order_total_usd) FILTER (WHERE status IN {PLACED}), 2) FROM marts.fct_orders"
    ).fetchone()  # type: ignore[misc]
    (conversion,) = con.execute(
        "SELECT round(sum(checkout_sessions) / nullif(sum(sessions), 0), 4) FROM marts.web_funnel"
    ).fetchone()  # type: ignore[misc]
    return Kpis(_num(revenue), int(orders), _num(aov), _num(conversion), first_day, last_day)


def format_usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def format_count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def normalize_quality(quality: Mapping[str, Any] | None) -> list[QualityRow]:
    """Accept ``name -> bool | "passed"/"failed" | {passed|status, severity, description}``."""
    rows = []
    for name, value in sorted((quality or {}).items()):
        severity, description, passed = "", "", None
        if isinstance(value, Mapping):
            severity = str(value.get("severity") or "")
            description = str(value.get("description") or "")
            if "passed" in value and value["passed"] is not None:
                passed = bool(value["passed"])
            elif "status" in value:
                passed = _passed_from_text(str(value["status"]))
        elif isinstance(value, bool):
            passed = value
        elif isinstance(value, str):
            passed = _passed_from_text(value)
        status = "unknown" if passed is None else ("passed" if passed else "failed")
        rows.append(QualityRow(str(name), status, severity, description))
    return rows


def _passed_from_text(text: str) -> bool | None:
    text = text.strip().lower()
    if text in ("passed", "pass", "ok", "succeeded", "success", "true"):
        return True
    if text in ("failed", "fail", "error", "execution_failed", "false"):
        return False
    return None


def _figure_html(fig: go.Figure, div_id: str, first: bool) -> Markup:
    fig.update_layout(template="plotly_white", margin={"l": 50, "r": 30, "t": 50, "b": 40}, height=380)
    html = pio.to_html(
        fig,
        include_plotlyjs=first,
        full_html=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    return Markup(html)  # noqa: S704 - plotly's own output; every data value is JSON-encoded


def daily_revenue_figure(con: duckdb.DuckDBPyConnection) -> go.Figure:
    rows = con.execute(
        "SELECT order_date, revenue_usd, orders FROM marts.daily_revenue "
        f"ORDER BY order_date DESC LIMIT {CHART_DAYS}"
    ).fetchall()[::-1]
    days = [r[0] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=days, y=[r[1] for r in rows], name="Revenue (USD)"), secondary_y=False)
    fig.add_trace(
        go.Scatter(x=days, y=[r[2] for r in rows], name="Orders", mode="lines+markers"),
        secondary_y=True,
    )
    fig.update_layout(title="Daily revenue and orders")
    fig.update_yaxes(title_text="Revenue (USD)", secondary_y=False)
    fig.update_yaxes(title_text="Orders", secondary_y=True, rangemode="tozero", showgrid=False)
    fig.update_yaxes(rangemode="tozero", secondary_y=False)
    fig.update_xaxes(type="date", tickformat="%b %d, %Y")
    if len(days) <= 31:
        fig.update_xaxes(dtick=86_400_000)  # one tick per day, no hour ticks in short ranges
    return fig


def category_figure(con: duckdb.DuckDBPyConnection) -> go.Figure:
    rows = con.execute(
        "SELECT category, sum(revenue_usd) AS revenue, sum(units) AS units "
        "FROM marts.category_sales GROUP BY category ORDER BY revenue DESC NULLS LAST, category"
    ).fetchall()
    names = [r[0] if r[0] is not None else "(unknown)" for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Revenue (USD)", "Units sold"))
    fig.add_trace(go.Bar(x=names, y=[r[1] for r in rows], name="Revenue (USD)"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[r[2] for r in rows], name="Units"), row=1, col=2)
    fig.update_layout(title="Sales by category", showlegend=False)
    return fig


def funnel_figure(con: duckdb.DuckDBPyConnection) -> go.Figure:
    sessions, carts, checkouts = con.execute(
        "SELECT coalesce(sum(sessions), 0), coalesce(sum(cart_sessions), 0), "
        "coalesce(sum(checkout_sessions), 0) FROM marts.web_funnel"
    ).fetchone()  # type: ignore[misc]
    fig = go.Figure(
        go.Funnel(
            y=["Sessions", "Added to cart", "Checked out"],
            x=[int(sessions), int(carts), int(checkouts)],
            textinfo="value+percent initial",
        )
    )
    fig.update_layout(title="Web funnel (all days)")
    return fig


def latest_days(con: duckdb.DuckDBPyConnection, days: int = LATEST_DAYS) -> list[dict[str, str]]:
    rows = con.execute(
        "SELECT r.order_date, r.orders, r.revenue_usd, r.avg_order_value_usd, r.cancelled_share, "
        "f.sessions, f.conversion_rate FROM marts.daily_revenue AS r "
        "LEFT JOIN marts.web_funnel AS f ON f.event_date = r.order_date "
        "ORDER BY r.order_date DESC LIMIT ?",
        [days],
    ).fetchall()
    return [
        {
            "day": str(r[0]),
            "orders": format_count(r[1]),
            "revenue": format_usd(_num(r[2])),
            "aov": format_usd(_num(r[3])),
            "cancelled": format_percent(_num(r[4])),
            "sessions": format_count(r[5]),
            "conversion": format_percent(_num(r[6])),
        }
        for r in rows
    ]


def render_report(
    con: duckdb.DuckDBPyConnection,
    quality: Mapping[str, Any] | None,
    generated_at: datetime | None = None,
) -> str:
    """The whole report as one HTML string; plotly.js is inlined once, before the first chart."""
    kpis = query_kpis(con)
    figures: Sequence[tuple[str, go.Figure]] = (
        ("chart-daily-revenue", daily_revenue_figure(con)),
        ("chart-category-sales", category_figure(con)),
        ("chart-web-funnel", funnel_figure(con)),
    )
    charts = [_figure_html(fig, div_id, i == 0) for i, (div_id, fig) in enumerate(figures)]
    checks = normalize_quality(quality)
    return _env.get_template(TEMPLATE).render(
        generated_at=(generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        kpis=[
            (
                "total_revenue",
                "Total revenue",
                format_usd(kpis.total_revenue_usd),
                kpis.total_revenue_usd,
            ),
            ("orders", "Orders", format_count(kpis.orders), kpis.orders),
            (
                "avg_order_value",
                "Average order value",
                format_usd(kpis.avg_order_value_usd),
                kpis.avg_order_value_usd,
            ),
            (
                "conversion",
                "Conversion",
                format_percent(kpis.conversion_rate),
                kpis.conversion_rate,
            ),
        ],
        period=(kpis.first_day, kpis.last_day),
        charts=charts,
        latest=latest_days(con),
        checks=checks,
        failed=sum(1 for c in checks if c.status == "failed"),
    )


def write_report(lake: Lake, html: str, key: str = REPORT_KEY) -> str:
    """Publish ``html`` at ``key`` in one atomic step, so readers never see half a report."""
    lake.put_bytes(html.encode("utf-8"), key)
    return key
