"""The fast ``metatiles_for_boxes`` against a cell-by-cell reference, to the last ulp.

The reference tests every meta-tile of a window with :func:`metatile_bounds` and Mapnik's
inclusive box test, which is the definition. Boxes are drawn anywhere around the grid, or
with sides on a buffered meta-tile edge moved by 0–3 ulps either way, so both the binary
search over the level's edges and the per-box path (forced by shrinking its threshold)
must find exactly the same set, sorted and clipped.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.schemes import SMALL, UNBOUNDED, WM

import tiledelta.grid.metatiles as mt_mod
from tiledelta.grid import (
    metatile_bounds,
    metatile_grid,
    metatiles_for_boxes,
    query_pad,
)
from tiledelta.plan.plan import merge_metatiles


def reference(scheme, level, boxes, pad, meta, window) -> list[list[int]]:
    """Every meta-tile of ``window`` whose buffered extent meets a box (inclusive)."""
    out = []
    for r in range(window[0]):
        for c in range(window[1]):
            m = metatile_bounds(scheme, level, r, c, meta)
            if any(
                x0 <= m.xmax + pad
                and x1 >= m.xmin - pad
                and y0 <= m.ymax + pad
                and y1 >= m.ymin - pad
                for x0, y0, x1, y1 in boxes
            ):
                out.append([r, c])
    return out


def _ulps(v: float, k: int) -> float:
    for _ in range(abs(k)):
        v = float(np.nextafter(v, np.inf if k > 0 else -np.inf))
    return v


@st.composite
def cases(draw):
    scheme = draw(st.sampled_from([SMALL, UNBOUNDED, WM]))
    meta = draw(st.sampled_from([1, 2, 4, 8]))
    level = draw(st.sampled_from([2, 3, 4] if scheme is WM else scheme.levels))
    pad = draw(
        st.sampled_from([0, 1, 8, 64, 300]).map(
            lambda px: 0.0 if px == 0 else query_pad(scheme, level, px)
        )
    )
    res = scheme.resolution(level)
    mw, mh = meta * scheme.tile_width * res, meta * scheme.tile_height * res
    grid = metatile_grid(scheme, level, meta)
    rows, cols = grid if grid is not None else (5, 5)
    lo_x, hi_x = scheme.origin_x - 2 * mw, scheme.origin_x + (cols + 1) * mw
    lo_y, hi_y = scheme.origin_y - (rows + 1) * mh, scheme.origin_y + 2 * mh

    def coord(axis: str):
        free = st.floats(*((lo_x, hi_x) if axis == "x" else (lo_y, hi_y)), allow_nan=False)
        n = cols if axis == "x" else rows

        def on_edge(args) -> float:
            k, side, sign, ulps = args
            b = metatile_bounds(
                scheme, level, 0 if axis == "x" else k, k if axis == "x" else 0, meta
            )
            v = (b.xmin, b.xmax)[side] if axis == "x" else (b.ymin, b.ymax)[side]
            return _ulps(v + sign * pad, ulps)

        edge = st.tuples(
            st.integers(0, n), st.integers(0, 1), st.sampled_from([-1, 0, 1]), st.integers(-3, 3)
        ).map(on_edge)
        return st.one_of(free, edge)

    def one_box(v):
        x0, x1, y0, y1, point = v
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if point:
            x1, y1 = x0, y0
        return (x0, y0, x1, y1)

    box = st.tuples(coord("x"), coord("x"), coord("y"), coord("y"), st.booleans()).map(one_box)
    boxes = draw(st.lists(box, min_size=0, max_size=12))
    if grid is not None:
        window = (rows, cols)
    else:  # every meta-tile any box can reach, and one more on each side
        far_x = max([b[2] for b in boxes] + [scheme.origin_x])
        far_y = min([b[1] for b in boxes] + [scheme.origin_y])
        window = (
            int((scheme.origin_y - far_y + pad) // mh) + 3,
            int((far_x + pad - scheme.origin_x) // mw) + 3,
        )
    return scheme, level, boxes, pad, meta, window


@pytest.mark.parametrize("span", [mt_mod._SEARCH_SPAN, -(10**12)], ids=["search", "per-box"])
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_metatiles_for_boxes_equals_the_reference(span, case, monkeypatch):
    scheme, level, boxes, pad, meta, window = case
    monkeypatch.setattr(mt_mod, "_SEARCH_SPAN", span)
    arr = np.array(boxes, dtype=float).reshape(-1, 4)
    got = metatiles_for_boxes(scheme, level, arr, pad, meta)
    assert got.dtype == np.int64 and got.shape[1:] == (2,)
    assert got.tolist() == reference(scheme, level, boxes, pad, meta, window)


def test_many_boxes_both_paths_and_big_rectangles(monkeypatch):
    """Thousands of boxes of every size (the occupancy grid, its 2 × 2 shapes, large
    rectangles and the sort fallback) give the reference's set on both paths."""
    rng = np.random.default_rng(13)
    scheme, level, meta = SMALL, 2, 1
    pad = query_pad(scheme, level, 16)
    window = metatile_grid(scheme, level, meta)
    x = rng.uniform(900, 3600, (3000, 2))
    y = rng.uniform(6000, 9100, (3000, 2))
    w = rng.choice([0.0, 1.0, 50.0, 400.0, 2000.0], size=3000, p=[0.2, 0.3, 0.3, 0.15, 0.05])
    boxes = np.column_stack([x[:, 0], y[:, 0], x[:, 0] + w, y[:, 0] + w * 0.7])
    want = reference(scheme, level, boxes[:300].tolist(), pad, meta, window)
    for span in (mt_mod._SEARCH_SPAN, -(10**12)):
        monkeypatch.setattr(mt_mod, "_SEARCH_SPAN", span)
        assert metatiles_for_boxes(scheme, level, boxes[:300], pad, meta).tolist() == want
    monkeypatch.setattr(mt_mod, "_GRID_CELLS", 0)  # the sort of linear indices
    assert metatiles_for_boxes(scheme, level, boxes[:300], pad, meta).tolist() == want


def test_non_finite_boxes_are_ignored():
    boxes = np.array([[np.nan, 0, 1, 1], [np.inf, 1, 2, 2]])
    assert metatiles_for_boxes(WM, 3, boxes, 0.0, 4).shape == (0, 2)


def test_merge_metatiles_is_the_sorted_union():
    a = np.array([[0, 5], [2, 1]])
    b = np.array([[2, 1], [1, 9], [0, 0]])
    assert merge_metatiles([a, b]).tolist() == [[0, 0], [0, 5], [1, 9], [2, 1]]
    assert merge_metatiles([b]).tolist() == [[0, 0], [1, 9], [2, 1]]
    assert merge_metatiles([]).shape == (0, 2)
