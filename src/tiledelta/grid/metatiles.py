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
from collections.abc import Callable
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


#: Columns plus rows (beyond 4 per box) up to which a box's sides are found by binary
#: search in the level's edges; beyond, from each box's own estimate.
_SEARCH_SPAN = 1 << 16


def metatiles_for_boxes(
    scheme: TilingScheme, level: int, boxes: np.ndarray, pad: float, meta: int
) -> np.ndarray:
    """Unique (mrow, mcol) of meta-tiles whose extent, grown by ``pad``, meets any box.

    ``boxes`` is (n, 4) xmin, ymin, xmax, ymax in map units. Touching counts
    (Mapnik's box test is inclusive). The result is sorted and clipped to the grid.

    Each box meets a rectangle of meta-tiles. The inclusive test of a box side against a
    buffered meta-tile edge (the same float expressions as :func:`metatile_bounds`) is
    monotone in the column (row), so a box's first and last columns and rows are found
    exactly: by binary search in the edges of the columns (rows) the boxes span, or, when
    they span too many, from each box's estimate by division nudged by exact tests. The
    rectangles are then merged on a linear index (an occupancy grid when their region is
    small); no box is expanded into candidates.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        boxes = boxes[np.isfinite(boxes).all(axis=1)]
    empty = np.zeros((0, 2), dtype=np.int64)
    if not len(boxes):
        return empty
    e = _Edges(scheme, level, pad, meta)
    x0, y0, x1, y1 = np.ascontiguousarray(boxes.T)
    mgrid = metatile_grid(scheme, level, meta)
    # The columns and rows the boxes can reach: by division, one wider on each side.
    cmin = max(int(np.floor((x0.min() - pad - e.ox) / e.mw)) - 1, 0)
    cmax = int(np.floor((x1.max() + pad - e.ox) / e.mw)) + 1
    rmin = max(int(np.floor((e.oy - y1.max() - pad) / e.mh)) - 1, 0)
    rmax = int(np.floor((e.oy - y0.min() + pad) / e.mh)) + 1
    if mgrid is not None:
        rmax, cmax = min(rmax, mgrid[0] - 1), min(cmax, mgrid[1] - 1)
    if cmin > cmax or rmin > rmax:
        return empty
    if (cmax - cmin) + (rmax - rmin) <= 4 * len(boxes) + _SEARCH_SPAN:
        cs = np.arange(cmin, cmax + 1, dtype=np.int64)
        rs = np.arange(rmin, rmax + 1, dtype=np.int64)
        # Edges are monotone: right and left rise with the column, bottom and top fall
        # with the row (negated to rise, which is exact).
        c0 = cmin + np.searchsorted(e.right(cs), x0, "left")  # first: x0 <= right
        c1 = cmin + np.searchsorted(e.left(cs), x1, "right") - 1  # last: left <= x1
        r0 = rmin + np.searchsorted(-e.bottom(rs), -y1, "left")  # first: bottom <= y1
        r1 = rmin + np.searchsorted(-e.top(rs), -y0, "right") - 1  # last: y0 <= top
    else:
        c0, c1, r0, r1 = _sides_per_box(e, boxes, mgrid)
    ok = (r0 <= r1) & (c0 <= c1)
    if not ok.all():
        r0, r1, c0, c1 = r0[ok], r1[ok], c0[ok], c1[ok]
    if not len(r0):
        return empty
    return _union_of_rectangles(r0, r1, c0, c1)


class _Edges:
    """A level's buffered meta-tile edges, by metatile_bounds' own float expressions."""

    def __init__(self, scheme: TilingScheme, level: int, pad: float, meta: int) -> None:
        res = scheme.resolution(level)
        self.mw = meta * scheme.tile_width * res
        self.mh = meta * scheme.tile_height * res
        self.tw, self.th = scheme.tile_width * res, scheme.tile_height * res
        self.ox, self.oy = scheme.origin_x, scheme.origin_y
        self.pad, self.meta = pad, meta

    def left(self, c: np.ndarray) -> np.ndarray:
        return (self.ox + (c * self.meta) * self.tw) - self.pad

    def right(self, c: np.ndarray) -> np.ndarray:
        return (self.ox + (c * self.meta) * self.tw + self.mw) + self.pad

    def top(self, r: np.ndarray) -> np.ndarray:
        return (self.oy - (r * self.meta) * self.th) + self.pad

    def bottom(self, r: np.ndarray) -> np.ndarray:
        return ((self.oy - (r * self.meta) * self.th) - self.mh) - self.pad


def _sides_per_box(
    e: _Edges, boxes: np.ndarray, mgrid: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each box's first and last column and row, from its own estimate (wide spans)."""
    x0, y0, x1, y1 = boxes.T
    ec0 = np.floor((x0 - e.pad - e.ox) / e.mw).astype(np.int64)
    ec1 = np.floor((x1 + e.pad - e.ox) / e.mw).astype(np.int64)
    er0 = np.floor((e.oy - y1 - e.pad) / e.mh).astype(np.int64)
    er1 = np.floor((e.oy - y0 + e.pad) / e.mh).astype(np.int64)
    wc0, wc1 = np.maximum(ec0 - 1, 0), ec1 + 1
    wr0, wr1 = np.maximum(er0 - 1, 0), er1 + 1
    if mgrid is not None:
        wr1, wc1 = np.minimum(wr1, mgrid[0] - 1), np.minimum(wc1, mgrid[1] - 1)
    # An empty window (wc0 > wc1) gives c0 > c1, dropped by the caller.
    wc1, wr1 = np.maximum(wc1, wc0 - 1), np.maximum(wr1, wr0 - 1)

    def first(test: _Test, guess: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return _first_true(test, np.clip(guess, lo, hi + 1), lo, hi + 1)

    c0 = first(lambda c, i: x0[i] <= e.right(c), ec0, wc0, wc1)
    c1 = first(lambda c, i: ~(e.left(c) <= x1[i]), ec1 + 1, wc0, wc1) - 1
    r0 = first(lambda r, i: e.bottom(r) <= y1[i], er0, wr0, wr1)
    r1 = first(lambda r, i: ~(y0[i] <= e.top(r)), er1 + 1, wr0, wr1) - 1
    return c0, c1, r0, r1


_Test = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _first_true(test: _Test, guess: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per element, the least k in [lo, hi] with ``test(k)`` (``hi`` when none below it).

    ``test(k, idx)`` must be monotone in k (False then True); ``guess`` lies in [lo, hi].
    """
    k = guess.copy()
    idx = np.flatnonzero(k > lo)
    while len(idx):  # step down while the one below still passes
        down = test(k[idx] - 1, idx)
        idx = idx[down]
        k[idx] -= 1
        idx = idx[k[idx] > lo[idx]]
    idx = np.flatnonzero(k < hi)
    while len(idx):  # step up while this one fails
        up = ~test(k[idx], idx)
        idx = idx[up]
        k[idx] += 1
        idx = idx[k[idx] < hi[idx]]
    return k


#: Largest region (cells) merged on an occupancy grid; beyond it, a sort of linear indices.
_GRID_CELLS = 1 << 22


def _union_of_rectangles(
    r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray
) -> np.ndarray:
    """Sorted unique (row, col) of the cells of inclusive rectangles [r0, r1] × [c0, c1]."""
    br, bc = int(r0.min()), int(c0.min())
    nrows, ncols = int(r1.max()) - br + 1, int(c1.max()) - bc + 1
    area = nrows * ncols
    dr, dc = r1 - r0, c1 - c0
    if area <= _GRID_CELLS and area <= 16 * len(r0) + 4096:
        # Rectangles of at most 2 × 2 (nearly all) mark their top-left cell per shape;
        # the shapes then spread by shifting the whole grid. Larger ones are expanded.
        small = (dr <= 1) & (dc <= 1)
        lin = (r0 - br) * ncols + (c0 - bc)
        shape = dr * 2 + dc
        big = None
        if not small.all():
            big = ~small
            lin, shape = lin[small], shape[small]
        mark = np.zeros(4 * area, dtype=bool)
        mark[shape * area + lin] = True
        m = mark.reshape(4, area)
        occ = m[0] | m[1] | m[2] | m[3]
        occ[1:] |= (m[1] | m[3])[:-1]  # one cell right
        occ[ncols:] |= (m[2] | m[3])[:-ncols]  # one cell down
        occ[ncols + 1 :] |= m[3][: -ncols - 1]  # and both
        if big is not None:
            rows, cols = _cells(r0[big], c0[big], dr[big], dc[big])
            occ[(rows - br) * ncols + (cols - bc)] = True
        lin = np.flatnonzero(occ)
    else:
        rows, cols = _cells(r0, c0, dr, dc)
        lin = np.unique((rows - br) * ncols + (cols - bc))
    return np.column_stack([lin // ncols + br, lin % ncols + bc]).astype(np.int64, copy=False)


def _cells(
    r0: np.ndarray, c0: np.ndarray, dr: np.ndarray, dc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, col) of rectangles with top-left (r0, c0) and extents (dr, dc) − 1."""
    nr, nc = dr + 1, dc + 1
    n = nr * nc
    owner = np.repeat(np.arange(len(n)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return r0[owner] + k // nc[owner], c0[owner] + k % nc[owner]
