"""Run reports: ``report.html``, ``changemap.png`` and plain-text summaries of a run."""

from tiledelta.runs.report.report import (
    CHANGEMAP_FILE,
    REPORT_FILE,
    changemap_frame,
    find_run,
    latest_report,
    read_json,
    render_changemap,
    render_html,
    report_text,
    run_kind,
    summary_text,
    try_write_report,
    write_report,
)

__all__ = [
    "CHANGEMAP_FILE",
    "REPORT_FILE",
    "changemap_frame",
    "find_run",
    "latest_report",
    "read_json",
    "render_changemap",
    "render_html",
    "report_text",
    "run_kind",
    "summary_text",
    "try_write_report",
    "write_report",
]
