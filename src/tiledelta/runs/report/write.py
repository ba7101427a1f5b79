"""Writing a run's report: ``report.html`` and ``changemap.png`` in its run folder."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

from tiledelta.project import Project
from tiledelta.runs.report.changemap import MAP_SIZE, render_changemap
from tiledelta.runs.report.find import CHANGEMAP_FILE, REPORT_FILE, read_json
from tiledelta.runs.report.html import render_html
from tiledelta.sources import LayerData

log = logging.getLogger(__name__)


def _when(folder: Path) -> str:
    try:
        t = (folder / "summary.json").stat().st_mtime
    except OSError:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_report(
    project: Project,
    folder: Path,
    *,
    layers: dict[str, LayerData] | None = None,
    summary: dict | None = None,
    size: tuple[int, int] = MAP_SIZE,
) -> Path:
    """Write ``report.html`` and ``changemap.png`` into the run folder; return the report.

    ``layers`` (as the run read them) saves reading the data again for the map;
    ``summary`` is used (and written as ``summary.json``) when the folder has none.
    A change map that cannot be drawn (no Mapnik, say) is logged and left out; the report
    is still written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if summary is None:
        summary = read_json(folder / "summary.json") or {}
    elif not (folder / "summary.json").exists():
        (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    map_ok = False
    try:
        png, _info = render_changemap(project, folder, layers=layers, size=size, summary=summary)
        _write_atomic(folder / CHANGEMAP_FILE, png)
        map_ok = True
    except Exception as exc:  # a report without a map beats no report
        log.warning("change map not drawn: %s: %s", type(exc).__name__, exc)
        summary = {**summary, "changemap_error": f"{type(exc).__name__}: {exc}"}
    files = [
        f
        for f in (CHANGEMAP_FILE, "summary.json", "changes.geojson", "tiles.json")
        if (folder / f).exists()
    ]
    page = render_html(
        summary,
        tiles=read_json(folder / "tiles.json"),
        files=files,
        map_src=CHANGEMAP_FILE if map_ok else None,
        project_name=project.root.name,
        when=_when(folder),
    )
    out = folder / REPORT_FILE
    _write_atomic(out, page.encode("utf-8"))
    return out


def try_write_report(
    project: Project, folder: Path, *, layers: dict[str, LayerData] | None = None
) -> Path | None:
    """:func:`write_report` for the end of a run: problems are logged, never raised."""
    try:
        return write_report(project, folder, layers=layers)
    except Exception as exc:
        log.warning("run report not written: %s: %s", type(exc).__name__, exc)
        return None
