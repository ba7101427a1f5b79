"""Meta-tile arithmetic: bounds, the reach of Mapnik's query, and which meta-tiles boxes meet.

A meta-tile is ``meta`` × ``meta`` tiles drawn as one image (labels placed across tile
edges), then cut. Mapnik reads the features whose bounding box meets the meta-tile's
extent grown by the buffer; :func:`query_pad` is that growth in map units, and
:func:`metatiles_for_boxes` finds the meta-tiles any box reaches, by arithmetic on box
edges rather than by enumerating the grid. The plan, the renderer and the server-side
areas of interest all use these same functions, so they agree to the last ulp.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyproj

from tiledelta.grid.tiles import Bounds, TilingScheme, grid_size, tile_bounds

#: Mapnik's standardized rendering pixel size (OGC SLD), used for scale denominators.
MAPNIK_PIXEL_METERS = 0.00028
#: Relative slack added to query boxes so float rounding never drops a feature Mapnik would see.
QUERY_SLACK = 1e-9
#: Mapnik's metres per degree for scale denominators in a geographic CRS (6378137 × 2π / 360).
METERS_PER_DEGREE = 6378137 * 2 * math.pi / 360


def metatile_bounds(scheme: TilingScheme, level: int, mrow: int, mcol: int, meta: int) -> Bounds:
    """The unbuffered extent of meta-tile (``mrow``, ``mcol``) at ``level``."""
    tl = tile_bounds(scheme, level, mrow * meta, mcol * meta)
    res = scheme.resolution(level)
    return Bounds(
        tl.xmin,
        tl.ymax - meta * scheme.tile_height * res,
        tl.xmin + meta * scheme.tile_width * res,
        tl.ymax,
    )


def query_pad(scheme: TilingScheme, level: int, buffer_px: int) -> float:
    """How far (map units) beyond a meta-tile Mapnik reads features at ``level``."""
    res = scheme.resolution(level)
    pad = buffer_px * res
    size = max(scheme.tile_width, scheme.tile_height) * res
    return pad + QUERY_SLACK * (abs(scheme.origin_x) + abs(scheme.origin_y) + size)


def mapnik_scale_denominator(scheme: TilingScheme, level: int) -> float:
    """The scale denominator Mapnik uses for rules and layers at ``level``.

    Mapnik divides the map units per pixel by its 0.28 mm pixel, and for a
    geographic CRS first turns degrees into metres along the equator.
    """
    sd = scheme.resolution(level) / MAPNIK_PIXEL_METERS
    return sd * METERS_PER_DEGREE if _geographic(scheme.crs) else sd


@lru_cache(maxsize=64)
def _geographic(crs: str) -> bool:
    return bool(pyproj.CRS.from_user_input(crs).is_geographic)


def metatile_grid(scheme: TilingScheme, level: int, meta: int) -> tuple[int, int] | None:
    """(rows, cols) of meta-tiles at ``level`` when the grid is bounded."""
    size = grid_size(scheme, level)
    if size is None:
        return None
    return math.ceil(size[0] / meta), math.ceil(size[1] / meta)


def metatile_tiles(
    scheme: TilingScheme, level: int, mrow: int, mcol: int, meta: int
) -> list[tuple[int, int]]:
    """(row, col) of the tiles of a meta-tile that lie inside the grid."""
    size = grid_size(scheme, level)
    rows = range(mrow * meta, mrow * meta + meta)
    cols = range(mcol * meta, mcol * meta + meta)
    if size is not None:
        rows = range(rows.start, min(rows.stop, size[0]))
        cols = range(cols.start, min(cols.stop, size[1]))
    return [(r, c) for r in rows for c in cols]


def metatiles_for_boxes(
    scheme: TilingScheme, level: int, boxes: np.ndarray, pad: float, meta: int
) -> np.ndarray:
    """Unique (mrow, mcol) of meta-tiles whose extent, grown by ``pad``, meets any box.

    ``boxes`` is (n, 4) xmin, ymin, xmax, ymax in map units. Touching counts
    (Mapnik's box test is inclusive). The result is sorted and clipped to the grid.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 2), dtype=np.int64)
    res = scheme.resolution(level)
    mw = meta * scheme.tile_width * res
    mh = meta * scheme.tile_height * res
    # Candidate ranges by division, one meta-tile wider on each side; the exact
    # inclusive test below (the same float expressions as metatile_bounds) decides.
    c0 = np.floor((boxes[:, 0] - pad - scheme.origin_x) / mw).astype(np.int64) - 1
    c1 = np.floor((boxes[:, 2] + pad - scheme.origin_x) / mw).astype(np.int64) + 1
    r0 = np.floor((scheme.origin_y - boxes[:, 3] - pad) / mh).astype(np.int64) - 1
    r1 = np.floor((scheme.origin_y - boxes[:, 1] + pad) / mh).astype(np.int64) + 1
    r0, c0 = np.maximum(r0, 0), np.maximum(c0, 0)
    mgrid = metatile_grid(scheme, level, meta)
    if mgrid is not None:
        r1, c1 = np.minimum(r1, mgrid[0] - 1), np.minimum(c1, mgrid[1] - 1)
    ok = (r0 <= r1) & (c0 <= c1)
    r0, r1, c0, c1, boxes = r0[ok], r1[ok], c0[ok], c1[ok], boxes[ok]
    if not len(r0):
        return np.zeros((0, 2), dtype=np.int64)
    nr, nc = r1 - r0 + 1, c1 - c0 + 1
    n = nr * nc
    owner = np.repeat(np.arange(len(n)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rows = r0[owner] + k // nc[owner]
    cols = c0[owner] + k % nc[owner]
    tw, th = scheme.tile_width * res, scheme.tile_height * res
    xmin = scheme.origin_x + (cols * meta) * tw
    ymax = scheme.origin_y - (rows * meta) * th
    xmax = xmin + meta * scheme.tile_width * res
    ymin = ymax - meta * scheme.tile_height * res
    b = boxes[owner]
    hit = (
        (b[:, 0] <= xmax + pad)
        & (b[:, 2] >= xmin - pad)
        & (b[:, 1] <= ymax + pad)
        & (b[:, 3] >= ymin - pad)
    )
    return np.unique(np.column_stack([rows[hit], cols[hit]]), axis=0).reshape(-1, 2)
