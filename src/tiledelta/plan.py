"""Tile plans: which meta-tiles to render, level by level.

A meta-tile must be drawn when a feature's bounding box meets its buffered
extent, because that is exactly what Mapnik reads to draw it. The same rule
gives the full build (every feature's box) and the dirty set of an update
(the old and new boxes of changed features), so both are computed here
without enumerating the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tiledelta._mapnik import mapnik
from tiledelta.grid import Bounds, TilingScheme, grid_size
from tiledelta.render import mapnik_scale_denominator, query_pad
from tiledelta.style import Style


@dataclass
class TilePlan:
    """Meta-tiles to render per level, as (mrow, mcol) int64 arrays, plus counts."""

    metatile: int
    levels: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def metatile_count(self) -> int:
        return sum(len(v) for v in self.levels.values())

    def tile_count(self, scheme: TilingScheme) -> dict[int, int]:
        """Tiles per level covered by the planned meta-tiles (clipped to the grid)."""
        out = {}
        for level, mt in self.levels.items():
            out[level] = int(
                sum(len(metatile_tiles(scheme, level, r, c, self.metatile)) for r, c in mt)
            )
        return out


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


def visible_levels(style: Style, scheme: TilingScheme, levels: list[int]) -> dict[str, list[int]]:
    """Per layer, the levels at which Mapnik can draw anything for it.

    A layer counts as visible at a level when the layer itself is visible at
    Mapnik's scale denominator there and at least one rule of its styles is.
    """
    m = mapnik.Map(256, 256)
    mapnik.load_map_from_string(m, style.xml_without_datasources, False, str(style.path.parent))
    out: dict[str, list[int]] = {}
    for lyr in m.layers:
        vis = []
        for level in levels:
            sd = mapnik_scale_denominator(scheme, level)
            if not lyr.visible(sd):
                continue
            for sname in lyr.styles:
                st = m.find_style(sname)
                if st is not None and any(r.min_scale <= sd < r.max_scale for r in st.rules):
                    vis.append(level)
                    break
        out[lyr.name] = vis
    return out


def plan_for_boxes(
    scheme: TilingScheme,
    style: Style,
    boxes_by_layer: dict[str, np.ndarray],
    levels: list[int],
    meta: int,
    buffer_px: int,
    *,
    visibility: dict[str, list[int]] | None = None,
    extent: Bounds | None = None,
) -> TilePlan:
    """The meta-tiles of ``levels`` that any of the layers' boxes reach."""
    visibility = visibility if visibility is not None else visible_levels(style, scheme, levels)
    plan = TilePlan(metatile=meta)
    for level in levels:
        parts = []
        for name, boxes in boxes_by_layer.items():
            if level not in visibility.get(name, ()):
                continue
            lyr_buffer = style.layer(name).buffer_size
            pad = query_pad(scheme, level, buffer_px if lyr_buffer is None else lyr_buffer)
            parts.append(metatiles_for_boxes(scheme, level, boxes, pad, meta))
        if parts:
            mt = np.unique(np.concatenate(parts), axis=0)
            if extent is not None and len(mt):
                ext = metatiles_for_boxes(scheme, level, np.array([extent]), 0.0, meta)
                lo, hi = ext.min(axis=0), ext.max(axis=0)
                keep = np.all((mt >= lo) & (mt <= hi), axis=1)
                mt = mt[keep]
            if len(mt):
                plan.levels[level] = mt
    return plan
