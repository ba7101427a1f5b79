"""Item thumbnails: the whole map's data extent in one small PNG (as ArcGIS items show)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image

from tiledelta.errors import ConfigError, RenderUnavailable
from tiledelta.grid import Bounds
from tiledelta.project import Project
from tiledelta.sources import LayerData, data_extent, read_layers
from tiledelta.stores import open_project_store


def parse_size(text: str) -> tuple[int, int]:
    """ "600x400" -> (600, 400)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"size {text!r}: use WIDTHxHEIGHT, e.g. 600x400") from exc
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ConfigError(f"size {text!r}: width and height must be 16-4096 pixels")
    return w, h


def fit(bounds: Bounds, size: tuple[int, int], margin: float = 0.05) -> tuple[Bounds, float]:
    """``bounds`` grown by ``margin`` and to the image's aspect ratio; and the resolution."""
    w, h = size
    cx, cy = (bounds.xmin + bounds.xmax) / 2, (bounds.ymin + bounds.ymax) / 2
    bw = max(bounds.xmax - bounds.xmin, 1.0) * (1 + 2 * margin)
    bh = max(bounds.ymax - bounds.ymin, 1.0) * (1 + 2 * margin)
    res = max(bw / w, bh / h)
    return Bounds(cx - w * res / 2, cy - h * res / 2, cx + w * res / 2, cy + h * res / 2), res


def render_thumbnail(
    project: Project,
    size: tuple[int, int] = (600, 400),
    layers: dict[str, LayerData] | None = None,
) -> bytes:
    """A PNG of the map over its full data extent."""
    layers = layers if layers is not None else read_layers(project)
    extent = data_extent(layers) or project.scheme.extent
    if extent is None:
        raise ConfigError("the map has no features and the scheme no extent: nothing to draw")
    box, res = fit(extent, size)
    # Drawing needs Mapnik, an optional dependency: imported only here. Without it (the
    # core install, e.g. ArcGIS Pro's Python) the thumbnail is put together from the
    # tiles the local cache already holds.
    try:
        from tiledelta.render.renderer import Renderer
    except RenderUnavailable:
        if not project.cache_path.exists():
            raise
        return thumbnail_from_cache(project, box, res, size)

    r = Renderer(project.style, project.scheme, layers, project.settings, size=size)
    return r.render_bounds(box, res).to_string("png32")


def thumbnail_from_cache(project: Project, box: Bounds, res: float, size: tuple[int, int]) -> bytes:
    """A PNG of ``box`` from the cached tiles of the level nearest ``res`` (no Mapnik)."""
    scheme = project.cache_scheme
    with open_project_store(project, create=False) as store:
        stored = {lv for lv, n in store.count().items() if n}
        lods = [lod for lod in scheme.lods if lod.level in stored]
        if not lods:
            raise ConfigError(f"{project.cache_path}: the cache holds no tiles to make a thumbnail")
        finer = [lod for lod in lods if lod.resolution <= res]
        lod = (
            max(finer, key=lambda d: d.resolution)
            if finer
            else min(lods, key=lambda d: d.resolution)
        )
        tw, th = scheme.tile_width * lod.resolution, scheme.tile_height * lod.resolution
        c0 = math.floor((box.xmin - scheme.origin_x) / tw)
        c1 = math.floor((box.xmax - scheme.origin_x) / tw)
        r0 = math.floor((scheme.origin_y - box.ymax) / th)
        r1 = math.floor((scheme.origin_y - box.ymin) / th)
        if (r1 - r0 + 1) * (c1 - c0 + 1) > 4096:
            raise ConfigError("the thumbnail would need over 4096 cached tiles; render it instead")
        addrs = [(lod.level, r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        tiles = store.get_many(addrs)
    mosaic = Image.new(
        "RGBA", ((c1 - c0 + 1) * scheme.tile_width, (r1 - r0 + 1) * scheme.tile_height)
    )
    for (_lv, r, c), data in tiles.items():
        with Image.open(io.BytesIO(data)) as tile:
            mosaic.paste(
                tile.convert("RGBA"), ((c - c0) * scheme.tile_width, (r - r0) * scheme.tile_height)
            )
    left = (box.xmin - (scheme.origin_x + c0 * tw)) / lod.resolution
    top = ((scheme.origin_y - r0 * th) - box.ymax) / lod.resolution
    crop = mosaic.crop(
        (
            round(left),
            round(top),
            round(left + (box.xmax - box.xmin) / lod.resolution),
            round(top + (box.ymax - box.ymin) / lod.resolution),
        )
    )
    out = io.BytesIO()
    crop.resize(size, Image.Resampling.LANCZOS).save(out, "PNG")
    return out.getvalue()


def write_thumbnail(project: Project, out: Path, size: tuple[int, int] = (600, 400)) -> Path:
    data = render_thumbnail(project, size)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
