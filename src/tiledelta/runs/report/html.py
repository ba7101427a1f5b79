"""The report page of a run (``report.html``, and the HTML part of a notification email)."""

from __future__ import annotations

from html import escape

from tiledelta.runs.report.facts import (
    CHANGED_WORDS,
    LEVEL_COLUMNS,
    SERVER_KINDS,
    count_label,
    level_order,
    level_row,
    level_words,
    parse_summary,
    rebuild_reason,
    run_kind,
    server_levels,
    tile_counts,
)
from tiledelta.runs.report.find import CHANGEMAP_FILE, tiles_per_level
from tiledelta.runs.summary import RunSummary

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
max-width:980px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}
.muted{color:#666}.ok{color:#1a7f37}.fail{color:#c62828}
table{border-collapse:collapse;margin:4px 0}
th,td{border-bottom:1px solid #ddd;padding:4px 12px 4px 0;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:10px;background:#5b8def;border-radius:2px}
.error{border:1px solid #e0a0a0;background:#fdecea;padding:8px 12px;white-space:pre-wrap;
font-family:ui-monospace,monospace}
img.map{max-width:100%;border:1px solid #ccc}
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def render_html(
    summary: dict,
    *,
    tiles: dict | None = None,
    files: list[str] | None = None,
    map_src: str | None = CHANGEMAP_FILE,
    project_name: str = "",
    when: str = "",
) -> str:
    """The report page for ``summary`` (self-contained: inline CSS, no scripts).

    ``summary`` as in ``summary.json``, or a failure's (``kind`` and ``error``); ``tiles``
    as in ``tiles.json``; ``map_src`` the change map's address, None for no map.
    """
    kind = run_kind(summary)
    s = parse_summary(summary)
    error = summary.get("error")
    run = summary.get("run")
    title = f"tiledelta {kind}" + (f" run {run}" if run is not None else "")
    if project_name:
        title += f" — {project_name}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    status = '<span class="fail">failed</span>' if error else '<span class="ok">finished</span>'
    sub = [status]
    if s is not None and "seconds" in s.model_fields_set:
        sub.append(f"in {_e(s.seconds)} s")
    if when:
        sub.append(f"at {_e(when)}")
    out.append(f'<p class="muted">{" ".join(sub)}</p>')
    if error:
        out.append(f'<h2>Error</h2><div class="error">{_e(error)}</div>')
    if s is not None:
        out += _overview(s)
        out += _changes(s, finished=not error)
        if s.kind in SERVER_KINDS:
            out += _server_levels(s)
        else:
            out += _tile_levels(s, tiles_per_level(tiles))
        out += _stages(s)
    if map_src:
        out.append(
            f'<h2>Change map</h2><p><a href="{_e(CHANGEMAP_FILE)}">'
            f'<img class="map" src="{_e(map_src)}" alt="change map"></a></p>'
        )
    elif summary.get("changemap_error"):
        out.append(
            f'<h2>Change map</h2><p class="muted">Not drawn: {_e(summary["changemap_error"])}</p>'
        )
    if files:
        out.append("<h2>Files</h2><ul>")
        for f in files:
            out.append(f'<li><a href="{_e(f)}">{_e(f)}</a></li>')
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _overview(s: RunSummary) -> list[str]:
    rows: list[tuple[str, object]] = [("cache", s.cache), ("cache kind", s.cache_kind)]
    if s.kind in SERVER_KINDS:
        rows.append(("target", s.target if "target" in s.model_fields_set else None))
        rows.append(("server jobs", len(s.jobs) if s.jobs is not None else None))
    counts = tile_counts(s)
    if counts and "metatiles_rendered" in s.model_fields_set:
        rows.append(("meta-tiles rendered", s.metatiles_rendered))
    rows += [(count_label(word), n) for word, n in counts]
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return []
    out = ["<h2>Summary</h2><table>"]
    for k, v in rows:
        cls = ' class="n"' if isinstance(v, int) else ""
        out.append(f"<tr><th>{_e(k)}</th><td{cls}>{_n(v)}</td></tr>")
    out.append("</table>")
    return out


def _changes(s: RunSummary, *, finished: bool) -> list[str]:
    changes = s.changes or {}
    reason = rebuild_reason(s)
    out = []
    if s.kind == "arcgis-baseline":
        out.append("<p>The server's cache was marked current: no server job was sent.</p>")
    elif s.kind == "seed" and finished:
        out.append("<p>Full build: every tile of the configured levels was rendered.</p>")
    elif reason:
        out.append(f"<p>Full rebuild: {_e(reason)}.</p>")
    layer_rows = changes.get("layers") or {}
    if layer_rows:
        out.append(
            '<table><tr><th>layer</th><th class="n">added</th><th class="n">modified</th>'
            '<th class="n">deleted</th></tr>'
        )
        for name, c in layer_rows.items():
            out.append(
                f'<tr data-layer="{_e(name)}"><td>{_e(name)}</td>'
                + "".join(
                    f'<td class="n">{_n(c.get(k, 0))}</td>'
                    for k in ("added", "modified", "deleted")
                )
                + "</tr>"
            )
        out.append("</table>")
    elif s.kind in ("update", "arcgis") and s.changes is not None and not reason:
        out.append("<p>No layer changed.</p>")
    for key, label in (
        ("new_levels", "new levels (rendered in full)"),
        ("dropped_levels", "dropped levels (tiles removed)"),
    ):
        if changes.get(key):
            out.append(f"<p>{_e(label)}: {_e(', '.join(str(v) for v in changes[key]))}</p>")
    if changes.get("unfinished_run"):
        out.append("<p>An earlier update did not finish; its tiles were planned again.</p>")
    return ["<h2>Changes</h2>", *out] if out else []


def _tile_levels(s: RunSummary, tiles: dict[str, list]) -> list[str]:
    """Per level: the run's counts (the same columns for a seed, a rebuild and an update),
    and the tiles it changed in the cache."""
    if not s.levels and not tiles:
        return []
    rows = {lv: level_row(s.levels.get(lv)) for lv in level_order(set(s.levels) | set(tiles))}
    columns = (
        [(f, w) for f, w in LEVEL_COLUMNS if f != "blank_stored" or s.tiles_blank_stored]
        if any(r is not None for r in rows.values())
        else []
    )
    head = "".join(f'<th class="n">{_e(w)}</th>' for _f, w in columns) or (
        f'<th class="n">{_e(level_words(s.kind))}</th>'
    )
    out = [
        "<h2>Tiles per level</h2><table><tr><th>level</th>"
        + head
        + (f'<th class="n">{_e(CHANGED_WORDS)}</th>' if tiles else "")
        + "</tr>"
    ]
    for lv, row in rows.items():
        info = s.levels.get(lv)
        if columns:
            cells = "".join(f'<td class="n">{_n((row or {}).get(f, 0))}</td>' for f, _w in columns)
        else:
            n = info.tiles if info is not None and info.tiles is not None else 0
            cells = f'<td class="n">{_n(n)}</td>'
        extra = f'<td class="n">{_n(len(tiles.get(lv, [])))}</td>' if tiles else ""
        out.append(f'<tr data-level="{_e(lv)}"><td>{_e(lv)}</td>{cells}{extra}</tr>')
    out.append("</table>")
    return out


def _server_levels(s: RunSummary) -> list[str]:
    """Per level: the scale and the server job sent for it (if any)."""
    rows = server_levels(s)
    if not rows:
        return []
    out = [
        "<h2>Server jobs per level</h2><table><tr><th>level</th>"
        '<th class="n">scale</th><th>server job</th></tr>'
    ]
    for lv, scale, job in rows:
        out.append(
            f'<tr data-level="{_e(lv)}"><td>{_e(lv)}</td>'
            f'<td class="n">{_e(scale)}</td><td>{_e(job)}</td></tr>'
        )
    out.append("</table>")
    return out


def _stages(s: RunSummary) -> list[str]:
    if not s.stages:
        return []
    top = max((float(v) for v in s.stages.values()), default=0.0) or 1.0
    out = [
        '<h2>Time per stage</h2><table><tr><th>stage</th><th class="n">seconds</th><th></th></tr>'
    ]
    for name, secs in s.stages.items():
        width = max(1, round(200 * float(secs) / top))
        out.append(
            f'<tr><td>{_e(name)}</td><td class="n">{float(secs):.3f}</td>'
            f'<td><span class="bar" style="width:{width}px"></span></td></tr>'
        )
    out.append("</table>")
    return out
