"""Run reports: ``report.html``, ``changemap.png`` and plain-text summaries of a run.

- :mod:`.find`: run folders, their reports and JSON files;
- :mod:`.facts`: what a summary says (its kind, counts, jobs), in the words all readers use;
- :mod:`.changemap`: the change map (drawn with Mapnik, when installed);
- :mod:`.html` and :mod:`.text`: the report page and the plain-text summary;
- :mod:`.write`: writing both into a run folder.
"""

from tiledelta.runs.report.changemap import (
    COLOR_NEW,
    COLOR_OLD,
    COLOR_TEXT,
    COLOR_TILE,
    changemap_frame,
    render_changemap,
)
from tiledelta.runs.report.facts import parse_summary, run_kind
from tiledelta.runs.report.find import (
    CHANGEMAP_FILE,
    REPORT_FILE,
    find_run,
    latest_report,
    read_json,
)
from tiledelta.runs.report.html import render_html
from tiledelta.runs.report.text import counts_line, report_text, summary_text
from tiledelta.runs.report.write import try_write_report, write_report

__all__ = [
    "counts_line",
    "CHANGEMAP_FILE",
    "COLOR_NEW",
    "COLOR_OLD",
    "COLOR_TEXT",
    "COLOR_TILE",
    "REPORT_FILE",
    "changemap_frame",
    "find_run",
    "latest_report",
    "parse_summary",
    "read_json",
    "render_changemap",
    "render_html",
    "report_text",
    "run_kind",
    "summary_text",
    "try_write_report",
    "write_report",
]
