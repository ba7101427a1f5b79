"""The change map (``changemap.png``): the map of a run's area with its changes over it.

The map itself is the cache's own tiles over the area of the run's changes, stitched at
the level whose resolution is nearest the map's (at least as fine) and resampled
(:func:`cache_base`): it costs what the change costs, not what the data holds. Where there
is no readable local cache (a server-side run, a cache not written yet) it is drawn by
Mapnik from the project's style over every feature, as before. Over it:

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

import io
import json
import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyproj
import shapely
from PIL import Image, ImageColor, ImageDraw, ImageFont, PngImagePlugin

from tiledelta.errors import CacheError
from tiledelta.grid import Bounds, grid_size, tile_bounds
from tiledelta.project import Project
from tiledelta.runs.report.facts import CHANGED_WORDS, parse_summary, rebuild_reason, run_kind
from tiledelta.runs.report.find import read_json, tiles_per_level
from tiledelta.sources import LayerData, data_extent, read_layers
from tiledelta.stores import open_project_store

log = logging.getLogger(__name__)

MAP_SIZE = (800, 560)
#: Extra room around the changes' extent, on each side (fraction of its size).
PAD = 0.2
#: The finest level whose changed tiles number at most this many has its tiles drawn.
MAX_TILES_DRAWN = 400
#: At most this many cache tiles are read for the map's base (else Mapnik draws it).
MAX_BASE_TILES = 2048

COLOR_NEW = (230, 0, 126, 255)  # magenta: added / modified features, as they are now
COLOR_OLD = (255, 136, 0, 255)  # orange, dashed: where deleted / modified features were
COLOR_TILE = (0, 90, 255, 255)  # blue: tiles written or removed
COLOR_TEXT = (20, 20, 20, 255)


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


def _render_base(project, layers, frame: Bounds, res: float, size) -> Image.Image:
    """The map drawn by Mapnik over every feature (where the cache cannot give it)."""
    # Drawing the map needs Mapnik, an optional dependency: imported only here.
    from tiledelta.render.renderer import Renderer

    r = Renderer(project.style, project.scheme, layers, project.settings, size=size)
    png = r.render_bounds(frame, res).to_string("png32")
    return Image.open(io.BytesIO(png)).convert("RGBA")


def background_color(project: Project) -> tuple[int, int, int, int]:
    """The style's background colour (transparent when it has none or it is unreadable)."""
    try:
        text = ET.fromstring(project.style.xml_without_datasources).get("background-color")
        if text:
            got = ImageColor.getcolor(text.strip(), "RGBA")
            return got if isinstance(got, tuple) else (got, got, got, 255)  # type: ignore[return-value]
    except (ET.ParseError, ValueError):
        pass
    return (0, 0, 0, 0)


def base_level(project: Project, res: float) -> int:
    """The level the map's base is stitched at: the coarsest whose resolution is at least
    as fine as ``res`` (the finest level when none is)."""
    levels = sorted(project.levels)
    fine = [lv for lv in levels if project.scheme.resolution(lv) <= res * (1 + 1e-9)]
    return fine[0] if fine else levels[-1]


def cache_base(project: Project, frame: Bounds, res: float, size) -> Image.Image | None:
    """The map's base from the cache's tiles at :func:`base_level`, resampled to ``size``
    over ``frame``; missing tiles are the style's background. None when the project has
    no readable cache, or the frame would need more than :data:`MAX_BASE_TILES` tiles."""
    scheme = project.scheme
    level = base_level(project, res)
    lres = scheme.resolution(level)
    tw, th = scheme.tile_width, scheme.tile_height
    c0 = math.floor((frame.xmin - scheme.origin_x) / (tw * lres))
    c1 = math.ceil((frame.xmax - scheme.origin_x) / (tw * lres)) - 1
    r0 = math.floor((scheme.origin_y - frame.ymax) / (th * lres))
    r1 = math.ceil((scheme.origin_y - frame.ymin) / (th * lres)) - 1
    if (c1 - c0 + 1) * (r1 - r0 + 1) > MAX_BASE_TILES:
        return None
    grid = grid_size(scheme, level)
    rows = range(max(r0, 0), (r1 if grid is None else min(r1, grid[0] - 1)) + 1)
    cols = range(max(c0, 0), (c1 if grid is None else min(c1, grid[1] - 1)) + 1)
    try:
        with open_project_store(project, readonly=True) as store:
            found = store.get_many([(level, r, c) for r in rows for c in cols])
    except CacheError as exc:
        log.debug("change map drawn by Mapnik: %s", exc)
        return None
    # Tiles shrunk by a whole factor first, so the mosaic stays near the map's size.
    k = max(1, 2 ** math.floor(math.log2(max(res / lres, 1.0))))
    while k > 1 and (tw % k or th % k):
        k //= 2
    sw, sh = tw // k, th // k
    mosaic = Image.new("RGBA", ((c1 - c0 + 1) * sw, (r1 - r0 + 1) * sh), background_color(project))
    for (_lv, r, c), data in found.items():
        with Image.open(io.BytesIO(data)) as tile:
            im = tile.convert("RGBA")
        if k > 1:
            im = im.reduce(k)
        mosaic.paste(im, ((c - c0) * sw, (r - r0) * sh))
    px = lres * k  # map units per mosaic pixel
    left = (frame.xmin - (scheme.origin_x + c0 * tw * lres)) / px
    top = ((scheme.origin_y - r0 * th * lres) - frame.ymax) / px
    box = (left, top, left + (frame.xmax - frame.xmin) / px, top + (frame.ymax - frame.ymin) / px)
    return mosaic.resize(tuple(size), Image.Resampling.BILINEAR, box=box)


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


def _note(summary: dict) -> str:
    """The legend's note on a map without changes: why there are none."""
    kind = run_kind(summary)
    s = parse_summary(summary)
    if kind in ("seed", "rebuild") or (s is not None and rebuild_reason(s)):
        return "full build"
    if kind == "arcgis-baseline":
        return "marked current: no server job"
    return "no feature changed"


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
    tiles = tiles_per_level(read_json(folder / "tiles.json"))
    info: dict = {"size": list(size), "crs": project.scheme.crs}
    if changes:
        frame, res = change_frame(project, [g for _l, _c, g in changes], size)
        note = None
    else:
        if layers is None:
            layers = read_layers(project)
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
        note = _note(summary)
    info.update(bounds=list(frame), resolution=res, note=note)

    # The local cache's own tiles; a server-side run's folder (runs-<target>/) is not
    # about the local cache, so its map is drawn.
    base = cache_base(project, frame, res, size) if folder.parent.name == "runs" else None
    info["base"] = "cache" if base is not None else "mapnik"
    if base is None:
        if layers is None or any(w is None for d in layers.values() for w in d.wkb):
            # The Dask engine's layers hold no geometry (docs/dask.md): read them here.
            layers = read_layers(project)
        base = _render_base(project, layers, frame, res, size)
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
        entries.append((f"tiles {CHANGED_WORDS}, level {level} ({n})", COLOR_TILE, "box"))
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
