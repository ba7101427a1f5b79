"""Run reports: ``report.html`` and ``changemap.png`` in a run's folder.

The change map is the map itself (drawn by Mapnik from the project's style, as the
tiles are) over the area of the run's changes, with the changes drawn over it:

- the current geometry of every added or modified feature, outlined in magenta;
- the box where every deleted or modified feature was, dashed in orange;
- the tiles written or removed at one level (the finest whose tiles fit, at most
  :data:`MAX_TILES_DRAWN`), outlined in blue;
- a legend.

A seed (or a full rebuild) has no changes: its change map is the whole data extent
with the note "full build". The frame of the map (bounds in the scheme CRS,
resolution) is stored in the PNG's ``tiledelta-frame`` text chunk, so tools can place
things on it.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pyproj
import shapely
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from tiledelta.grid import Bounds, tile_bounds
from tiledelta.project import Project
from tiledelta.runs.folder import latest_run, runs_dir
from tiledelta.sources import LayerData, data_extent, read_layers

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
CHANGEMAP_FILE = "changemap.png"
MAP_SIZE = (800, 560)
#: Extra room around the changes' extent, on each side (fraction of its size).
PAD = 0.2
#: The finest level whose changed tiles number at most this many has its tiles drawn.
MAX_TILES_DRAWN = 400

COLOR_NEW = (230, 0, 126, 255)  # magenta: added / modified features, as they are now
COLOR_OLD = (255, 136, 0, 255)  # orange, dashed: where deleted / modified features were
COLOR_TILE = (0, 90, 255, 255)  # blue: tiles written or removed
COLOR_TEXT = (20, 20, 20, 255)


# --- reading a run folder --------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_kind(summary: dict) -> str:
    """ "seed", "update", or "rebuild" (an update that had to rebuild everything)."""
    if summary.get("kind"):
        return str(summary["kind"])
    if summary.get("rebuild") or (summary.get("changes") or {}).get("rebuild"):
        return "rebuild"
    return "update" if "changes" in summary else "seed"


def _tiles_per_level(tiles: dict | None) -> dict[str, list]:
    return {str(k): v for k, v in ((tiles or {}).get("levels") or {}).items()}


# --- the change map --------------------------------------------------------------------------


def _from_wgs84(crs: str):
    dst = pyproj.CRS.from_user_input(crs)
    if dst.equals(pyproj.CRS.from_epsg(4326)):
        return lambda g: g
    tr = pyproj.Transformer.from_crs("EPSG:4326", dst, always_xy=True)
    return lambda g: shapely.transform(
        g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
    )


def read_changes(project: Project, folder: Path) -> list[tuple[str, str, object]]:
    """``(layer, "new" | "old", geometry in the scheme CRS)`` for each feature of
    ``changes.geojson`` (empty when the run has none)."""
    data = read_json(Path(folder) / "changes.geojson")
    if not data or not data.get("features"):
        return []
    to_map = _from_wgs84(project.scheme.crs)
    out = []
    for f in data["features"]:
        if not f.get("geometry"):
            continue
        g = to_map(shapely.from_geojson(json.dumps(f["geometry"])))
        if g is None or g.is_empty:
            continue
        props = f.get("properties") or {}
        out.append((str(props.get("layer", "")), str(props.get("change", "new")), g))
    return out


def change_frame(
    project: Project, geoms: list, size: tuple[int, int] = MAP_SIZE, pad: float = PAD
) -> tuple[Bounds, float]:
    """The map frame for ``geoms``: their extent grown by ``pad`` on each side and to
    the image's aspect ratio, at least one tile of the finest level across; and the
    resolution (map units per pixel)."""
    b = np.array([g.bounds for g in geoms], dtype=np.float64)
    xmin, ymin = b[:, 0].min(), b[:, 1].min()
    xmax, ymax = b[:, 2].max(), b[:, 3].max()
    scheme = project.scheme
    finest = max(project.levels)
    least = scheme.resolution(finest) * max(scheme.tile_width, scheme.tile_height)
    bw = max(xmax - xmin, least) * (1 + 2 * pad)
    bh = max(ymax - ymin, least) * (1 + 2 * pad)
    return _fit((xmin + xmax) / 2, (ymin + ymax) / 2, bw, bh, size)


def _fit(cx: float, cy: float, bw: float, bh: float, size: tuple[int, int]):
    w, h = size
    res = max(bw / w, bh / h)
    return Bounds(cx - w * res / 2, cy - h * res / 2, cx + w * res / 2, cy + h * res / 2), res


def choose_level(project: Project, tiles: dict[str, list], limit: int = MAX_TILES_DRAWN):
    """The finest level with changed tiles, at most ``limit`` of them; or None."""
    fits = [int(lv) for lv, t in tiles.items() if 0 < len(t) <= limit]
    fits = [lv for lv in fits if lv in project.scheme.levels]
    return max(fits) if fits else None


def _render_base(project, layers, frame: Bounds, res: float, size) -> bytes:
    # Drawing the map needs Mapnik, an optional dependency: imported only here.
    from tiledelta.render.renderer import Renderer

    r = Renderer(project.style, project.scheme, layers, project.settings, size=size)
    return r.render_bounds(frame, res).to_string("png32")


def _dashed(draw, pts: list[tuple[float, float]], fill, width: int, dash=7.0, gap=5.0) -> None:
    """A dashed polyline; the pattern runs on across vertices."""
    on, left = True, dash
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        seg = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while seg > 0 and pos < seg:
            step = min(left, seg - pos)
            if on:
                t0, t1 = pos / seg, (pos + step) / seg
                draw.line(
                    [
                        (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0),
                        (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1),
                    ],
                    fill=fill,
                    width=width,
                )
            pos += step
            left -= step
            if left <= 1e-9:
                on = not on
                left = dash if on else gap


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _draw_geometry(draw, g, to_px, fill, width: int, dashed: bool) -> None:
    def line(coords) -> None:
        pts = [to_px(x, y) for x, y in np.asarray(coords)[:, :2]]
        if len(pts) < 2:
            return
        if dashed:
            _dashed(draw, pts, fill, width)
        else:
            draw.line(pts, fill=fill, width=width, joint="curve")

    kind = g.geom_type
    if kind in ("Polygon",):
        line(g.exterior.coords)
        for ring in g.interiors:
            line(ring.coords)
    elif kind in ("LineString", "LinearRing"):
        line(g.coords)
    elif kind == "Point":
        x, y = to_px(g.x, g.y)
        r = 4 + width
        draw.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=width)
    elif hasattr(g, "geoms"):
        for part in g.geoms:
            _draw_geometry(draw, part, to_px, fill, width, dashed)


def _legend(draw, size, entries: list[tuple[str, tuple, str]], note: str | None) -> None:
    font = _font(13)
    pad, sw, row = 8, 26, 18
    lines = len(entries) + (1 if note else 0)
    text_w = max(
        [draw.textlength(label, font=font) for label, _c, _s in entries]
        + ([draw.textlength(note, font=font)] if note else [0])
    )
    w = int(pad * 3 + sw + text_w)
    h = pad * 2 + row * lines
    x0, y0 = pad, size[1] - h - pad
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=(255, 255, 255, 235), outline=(90, 90, 90, 255))
    y = y0 + pad
    if note:
        draw.text((x0 + pad, y), note, fill=COLOR_TEXT, font=font)
        y += row
    for label, color, style in entries:
        cy = y + row // 2 - 1
        xa, xb = x0 + pad, x0 + pad + sw
        if style == "dashed":
            _dashed(draw, [(xa, cy), (xb, cy)], color, 3, dash=6, gap=4)
        elif style == "box":
            draw.rectangle([xa + 4, cy - 6, xb - 4, cy + 6], outline=color, width=2)
        else:
            draw.line([(xa, cy), (xb, cy)], fill=color, width=3)
        draw.text((xb + pad, y + 1), label, fill=COLOR_TEXT, font=font)
        y += row


def render_changemap(
    project: Project,
    folder: Path,
    *,
    layers: dict[str, LayerData] | None = None,
    size: tuple[int, int] = MAP_SIZE,
    summary: dict | None = None,
) -> tuple[bytes, dict]:
    """The change map of the run in ``folder`` as PNG bytes, and what it shows."""
    folder = Path(folder)
    if summary is None:
        summary = read_json(folder / "summary.json") or {}
    changes = read_changes(project, folder)
    tiles = _tiles_per_level(read_json(folder / "tiles.json"))
    if layers is None:
        layers = read_layers(project)
    info: dict = {"size": list(size), "crs": project.scheme.crs}
    if changes:
        frame, res = change_frame(project, [g for _l, _c, g in changes], size)
        note = None
    else:
        extent = data_extent(layers) or project.scheme.extent
        if extent is None:
            extent = Bounds(-1.0, -1.0, 1.0, 1.0)
        bw, bh = extent.xmax - extent.xmin, extent.ymax - extent.ymin
        frame, res = _fit(
            (extent.xmin + extent.xmax) / 2,
            (extent.ymin + extent.ymax) / 2,
            max(bw, 1.0) * 1.1,
            max(bh, 1.0) * 1.1,
            size,
        )
        note = "full build" if run_kind(summary) in ("seed", "rebuild") else "no feature changed"
    info.update(bounds=list(frame), resolution=res, note=note)

    base = Image.open(io.BytesIO(_render_base(project, layers, frame, res, size))).convert("RGBA")
    over = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - frame.xmin) / res, (frame.ymax - y) / res

    entries: list[tuple[str, tuple, str]] = []
    level = choose_level(project, tiles)
    if level is not None:
        for r, c in tiles[str(level)]:
            tb = tile_bounds(project.scheme, level, int(r), int(c))
            x0, y0 = to_px(tb.xmin, tb.ymax)
            x1, y1 = to_px(tb.xmax, tb.ymin)
            draw.rectangle([x0, y0, x1, y1], fill=(0, 90, 255, 28), outline=COLOR_TILE, width=1)
        n = len(tiles[str(level)])
        entries.append((f"tiles written/removed, level {level} ({n})", COLOR_TILE, "box"))
        info["tile_level"] = level
    n_old = sum(1 for _l, c, _g in changes if c == "old")
    n_new = len(changes) - n_old
    for _layer, change, g in changes:
        if change == "old":
            _draw_geometry(draw, g, to_px, COLOR_OLD, 2, dashed=True)
    for _layer, change, g in changes:
        if change != "old":
            _draw_geometry(draw, g, to_px, COLOR_NEW, 3, dashed=False)
    if n_new:
        entries.append((f"added / modified, now ({n_new})", COLOR_NEW, "line"))
    if n_old:
        entries.append((f"deleted / modified, before ({n_old})", COLOR_OLD, "dashed"))
    if entries or note:
        _legend(draw, size, entries, note)
    img = Image.alpha_composite(base, over)
    meta = PngImagePlugin.PngInfo()
    meta.add_text("tiledelta-frame", json.dumps(info))
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=meta, optimize=False)
    info["features_new"], info["features_old"] = n_new, n_old
    return buf.getvalue(), info


def changemap_frame(path: Path) -> dict | None:
    """The frame stored in a change map PNG (bounds, resolution, size, crs), or None."""
    with Image.open(path) as im:
        text = im.info.get("tiledelta-frame")
    return json.loads(text) if text else None


# --- the HTML report -------------------------------------------------------------------------

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
    return html.escape(str(value), quote=True)


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
    """The report page for ``summary`` (self-contained: inline CSS, no scripts)."""
    kind = run_kind(summary)
    error = summary.get("error")
    run = summary.get("run")
    tiles = _tiles_per_level(tiles)
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
    if summary.get("seconds") is not None:
        sub.append(f"in {_e(summary['seconds'])} s")
    if when:
        sub.append(f"at {_e(when)}")
    out.append(f'<p class="muted">{" ".join(sub)}</p>')
    if error:
        out.append(f'<h2>Error</h2><div class="error">{_e(error)}</div>')

    # Overview
    rows = [
        ("cache", summary.get("cache")),
        ("cache kind", summary.get("cache_kind")),
        ("meta-tiles rendered", summary.get("metatiles_rendered")),
        ("tiles rendered", summary.get("tiles_rendered")),
        ("tiles written", summary.get("tiles_written")),
        ("tiles unchanged", summary.get("tiles_unchanged")),
        ("tiles removed", summary.get("tiles_removed")),
        ("tiles blank", summary.get("tiles_blank")),
    ]
    rows = [(k, v) for k, v in rows if v is not None]
    if rows:
        out.append("<h2>Summary</h2><table>")
        for k, v in rows:
            cls = ' class="n"' if isinstance(v, int) else ""
            out.append(f"<tr><th>{_e(k)}</th><td{cls}>{_n(v)}</td></tr>")
        out.append("</table>")

    # Changes
    changes = summary.get("changes") or {}
    out.append("<h2>Changes</h2>")
    reason = summary.get("rebuild") or changes.get("rebuild")
    if kind == "seed":
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
    elif kind == "update" and not reason:
        out.append("<p>No layer changed.</p>")
    for key, label in (
        ("new_levels", "new levels (rendered in full)"),
        ("dropped_levels", "dropped levels (tiles removed)"),
    ):
        if changes.get(key):
            out.append(f"<p>{_e(label)}: {_e(', '.join(str(v) for v in changes[key]))}</p>")
    if changes.get("unfinished_run"):
        out.append("<p>An earlier update did not finish; its tiles were planned again.</p>")

    # Tiles per level
    levels = summary.get("levels") or {}
    if levels or tiles:
        keys = sorted(set(levels) | set(tiles), key=lambda s: int(s) if s.isdigit() else s)
        out.append(
            "<h2>Tiles per level</h2><table><tr><th>level</th>"
            + f'<th class="n">{"tiles re-rendered" if kind == "update" else "tiles"}</th>'
            + ('<th class="n">written or removed</th>' if tiles else "")
            + "</tr>"
        )
        for lv in keys:
            n = (levels.get(lv) or {}).get("tiles", 0)
            extra = f'<td class="n">{_n(len(tiles.get(lv, [])))}</td>' if tiles else ""
            out.append(
                f'<tr data-level="{_e(lv)}"><td>{_e(lv)}</td><td class="n">{_n(n)}</td>{extra}</tr>'
            )
        out.append("</table>")

    # Stages
    stages = summary.get("stages") or {}
    if stages:
        top = max((float(v) for v in stages.values()), default=0.0) or 1.0
        out.append(
            '<h2>Time per stage</h2><table><tr><th>stage</th><th class="n">seconds</th>'
            "<th></th></tr>"
        )
        for name, secs in stages.items():
            width = max(1, round(200 * float(secs) / top))
            out.append(
                f'<tr><td>{_e(name)}</td><td class="n">{float(secs):.3f}</td>'
                f'<td><span class="bar" style="width:{width}px"></span></td></tr>'
            )
        out.append("</table>")

    # Map and files
    if map_src:
        out.append(
            f'<h2>Change map</h2><p><a href="{_e(CHANGEMAP_FILE)}">'
            f'<img class="map" src="{_e(map_src)}" alt="change map"></a></p>'
        )
    if files:
        out.append("<h2>Files</h2><ul>")
        for f in files:
            out.append(f'<li><a href="{_e(f)}">{_e(f)}</a></li>')
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
    A change map that cannot be drawn is logged and left out; the report is still written.
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


def latest_report(project: Project) -> Path | None:
    """The newest run's ``report.html`` (searching back to the newest run that has one)."""
    folder = runs_dir(project)
    if not folder.is_dir():
        return None
    for run in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
        if (run / REPORT_FILE).is_file():
            return run / REPORT_FILE
    return None


def try_write_report(
    project: Project, folder: Path, *, layers: dict[str, LayerData] | None = None
) -> Path | None:
    """:func:`write_report` for the end of a run: problems are logged, never raised."""
    try:
        return write_report(project, folder, layers=layers)
    except Exception as exc:
        log.warning("run report not written: %s: %s", type(exc).__name__, exc)
        return None


def find_run(project: Project, run: str | int | None = None) -> Path | None:
    """The folder of run ``run`` (an id such as 2 or "000002"), or the newest run's."""
    if run is None:
        return latest_run(project)
    try:
        run_id = int(str(run))
    except ValueError:
        return None
    folder = runs_dir(project) / f"{run_id:06d}"
    return folder if folder.is_dir() else None


def report_text(folder: Path) -> str:
    """A plain-text summary of the run in ``folder`` (for terminals and emails)."""
    folder = Path(folder)
    return summary_text(
        read_json(folder / "summary.json") or {},
        tiles=read_json(folder / "tiles.json"),
        folder=folder,
    )


def summary_text(summary: dict, *, tiles: dict | None = None, folder: Path | None = None) -> str:
    """A plain-text summary of a run's ``summary`` (``tiles`` as in ``tiles.json``)."""
    s = summary
    tiles = _tiles_per_level(tiles)
    kind = run_kind(s)
    run = s.get("run", folder.name if folder is not None else None)
    head = f"tiledelta {kind}" + (f" run {run}" if run is not None else "")
    if s.get("error"):
        head += " FAILED"
    elif s.get("seconds") is not None:
        head += f", {s['seconds']} s"
    lines = [head]
    if s.get("error"):
        lines.append(f"  error: {s['error']}")
    if "tiles_written" in s:
        lines.append(
            f"  tiles: {s.get('tiles_rendered', 0):,} rendered, "
            f"{s.get('tiles_written', 0):,} written, {s.get('tiles_unchanged', 0):,} unchanged, "
            f"{s.get('tiles_removed', 0):,} removed, {s.get('tiles_blank', 0):,} blank"
        )
    changes = s.get("changes") or {}
    reason = s.get("rebuild") or changes.get("rebuild")
    if kind == "seed":
        lines.append("  changes: full build")
    elif reason:
        lines.append(f"  changes: full rebuild ({reason})")
    for name, c in (changes.get("layers") or {}).items():
        if any(c.get(k) for k in ("added", "modified", "deleted")):
            lines.append(
                f"  {name}: {c.get('added', 0)} added, {c.get('modified', 0)} modified, "
                f"{c.get('deleted', 0)} deleted"
            )
    for key, label in (("new_levels", "new levels"), ("dropped_levels", "dropped levels")):
        if changes.get(key):
            lines.append(f"  {label}: {', '.join(str(v) for v in changes[key])}")
    levels = s.get("levels") or {}
    if levels:
        parts = []
        for lv in sorted(levels, key=lambda v: int(v) if str(v).isdigit() else 0):
            n = (levels[lv] or {}).get("tiles", 0)
            parts.append(f"{lv}: {n:,}" + (f" ({len(tiles[lv]):,} changed)" if lv in tiles else ""))
        lines.append("  levels: " + ", ".join(parts))
    stages = s.get("stages") or {}
    if stages:
        lines.append("  stages: " + ", ".join(f"{k} {float(v):.2f} s" for k, v in stages.items()))
    if folder is not None:
        report = folder / REPORT_FILE
        if report.is_file():
            lines.append(f"  report: {report}")
        if (folder / CHANGEMAP_FILE).is_file():
            lines.append(f"  change map: {folder / CHANGEMAP_FILE}")
    return "\n".join(lines)
