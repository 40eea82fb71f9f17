"""Report: one self-contained HTML file, PNG plots, a Markdown summary and the JSON behind them."""

from adaptk.report.write import ReportError, load_results, write_report

__all__ = ["ReportError", "load_results", "write_report"]
