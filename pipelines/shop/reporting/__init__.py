"""Static HTML reports over the marts, written into the lake."""

from pipelines.shop.reporting.report import REPORT_KEY, render_report, write_report

__all__ = ["REPORT_KEY", "render_report", "write_report"]
