"""Behaviour tests of change-driven updates, on real files (no mocks).

The invariant under test: after any sequence of data edits and ``update`` runs,
the cache is byte-identical, tile for tile, to a fresh ``seed`` of the current
data. Every scenario ends with :func:`assert_cache_equals_fresh_seed`.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
import shapely.affinity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from shapely.geometry import box
from support.schemes import SMALL, UNBOUNDED, WM

from tiledelta import api, sample
from tiledelta.api import seed, update
from tiledelta.change import detect_changes
from tiledelta.config import LayerConfig
from tiledelta.errors import LockedError
from tiledelta.grid import (
    Bounds,
    metatile_bounds,
    metatile_grid,
    metatiles_for_boxes,
    query_pad,
)
from tiledelta.project import project_lock
from tiledelta.sample import _read, _write
from tiledelta.stores import open_project_store, read_compact_cache

CLI = Path(sys.executable).parent / "tiledelta"  # the venv's console script
CLATSOP = Path(__file__).resolve().parents[2] / "shared" / "data" / "clatsop_buildings"

LEVELS = "13-17"
PITCH = sample.BLOCK + sample.STREET
TOWN = Bounds(
    sample.X0,
    sample.Y0,
    sample.X0 + sample.NX * PITCH + sample.STREET,
    sample.Y0 + sample.NY * PITCH + sample.STREET,
)
#: Attributes the sample style uses, per layer (what a feature's picture depends on).
USED = {"water": (), "roads": ("name",), "parcels": ("parcel_no",), "buildings": ("kind",)}
GTYPE = {"water": "Polygon", "roads": "LineString", "parcels": "Polygon", "buildings": "Polygon"}
STATE_IGNORE = (".tiledelta",)


# --- helpers -------------------------------------------------------------------------------


def _cache_names(project_dir: Path) -> set[str]:
    """Folder entries that belong to the cache (and its build / swap leftovers)."""
    name = api.load_project(project_dir).cache_path.name
    return {name, name + ".building", name + ".old"}


def copy_project(src: Path, dst: Path, *, with_state: bool) -> Path:
    """Copy a project folder; without state, leave out the cache and ``.tiledelta``."""
    skip = set() if with_state else _cache_names(src) | set(STATE_IGNORE)
    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in skip])
    return dst


def read_cache(project_dir: Path) -> dict[tuple[int, int, int], bytes]:
    """Every stored tile of a project's cache, by address."""
    project = api.load_project(project_dir)
    out = {}
    if project.config.cache.kind == "compact":  # read-only: no conf.xml rewrite, any level
        opened = read_compact_cache(project.cache_path)
    else:
        opened = open_project_store(project, create=False)
    with opened as store:
        for lv, r, c in store.iter_tiles():
            data = store.get(lv, r, c)
            assert data is not None, f"listed tile {(lv, r, c)} has no data"
            out[(lv, r, c)] = data
    return out


def _diff_report(got: dict, want: dict) -> str:
    lines = []
    for lv in sorted({a[0] for a in got} | {a[0] for a in want}):
        g = {a for a in got if a[0] == lv}
        w = {a for a in want if a[0] == lv}
        missing = sorted(w - g)
        extra = sorted(g - w)
        differ = sorted(a for a in g & w if got[a] != want[a])
        if missing or extra or differ:
            lines.append(
                f"level {lv}: {len(missing)} missing {missing[:8]}, {len(extra)} extra "
                f"{extra[:8]}, {len(differ)} differ {differ[:8]}"
            )
    return "\n".join(lines)


def assert_cache_equals_fresh_seed(project_dir: Path) -> None:
    """The project's cache equals, tile for tile and byte for byte, a fresh seed of its data."""
    project_dir = Path(project_dir)
    got = read_cache(project_dir)
    with tempfile.TemporaryDirectory(prefix="fresh-seed-") as tmp:
        fresh = copy_project(project_dir, Path(tmp) / "p", with_state=False)
        seed(api.load_project(fresh))
        want = read_cache(fresh)
    if got != want:
        pytest.fail(
            f"cache of {project_dir} differs from a fresh seed:\n" + _diff_report(got, want)
        )


def gpkg_of(project_dir: Path) -> Path:
    return Path(project_dir) / "data" / "county.gpkg"


def layer_state(gpkg: Path, layer: str, attrs: tuple[str, ...], key: str | None = None):
    """What the renderer sees of each feature: (WKB, used attribute values), keyed or not."""
    cols = list(attrs) + ([key] if key else [])
    meta, _fids, geoms, values = pyogrio.raw.read(str(gpkg), layer=layer, columns=cols)
    by = dict(zip(meta["fields"], values, strict=True))
    rows = [(bytes(g), tuple(str(by[a][i]) for a in attrs)) for i, g in enumerate(geoms)]
    if key is None:
        return Counter(rows)
    return {int(by[key][i]): row for i, row in enumerate(rows)}


def set_processes(project_dir: Path, n: int) -> None:
    project = api.load_project(project_dir)
    project = project.updated(render={"processes": n})
    project.save()


def make_sample(folder: Path, *, keyed: bool = False, levels: str = LEVELS) -> Path:
    sample.generate(folder)
    if keyed:
        geoms, f = _read(gpkg_of(folder), "buildings")
        f["bid"] = list(range(1, len(geoms) + 1))
        _write(gpkg_of(folder), "buildings", geoms, f, "Polygon")
    api.init_project(
        folder, style=folder / "style.xml", levels=levels, cache_kind="compact", force=True
    )
    project = api.load_project(folder)
    project = project.updated(render={"processes": 1})
    if keyed:
        project = project.updated(layers={"buildings": LayerConfig(key="bid")})
    project.save()
    seed(api.load_project(folder))
    return folder


# --- edits ---------------------------------------------------------------------------------

EDITS = (
    "add_building",
    "delete_building",
    "move_building",
    "reshape_building",
    "relabel_road",
    "building_kind",
    "building_year",
    "parcel_owner",
    "delete_parcel",
    "add_parcel",
    "move_road",
)
NAMES = ("Astor Way", "Bond St", "Columbia Blvd", "W Marine Dr", "Exchange Street", "Niagara")

unit = st.floats(0, 1, allow_nan=False)
signed = st.floats(-1, 1, allow_nan=False)
edit_st = st.tuples(st.sampled_from(EDITS), unit, unit, signed, signed)
steps_st = st.lists(st.lists(edit_st, min_size=1, max_size=4), min_size=1, max_size=3)


def _pick(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def _delete(geoms: list, f: dict, i: int) -> None:
    del geoms[i]
    for v in f.values():
        del v[i]


def _town_box(u: float, v: float, size: float) -> shapely.Geometry:
    x = TOWN.xmin + u * (TOWN.xmax - TOWN.xmin - size)
    y = TOWN.ymin + v * (TOWN.ymax - TOWN.ymin - size)
    return box(x, y, x + size, y + size * 0.7)


def apply_edits(gpkg: Path, edits) -> None:
    """Apply (kind, u, v, a, b) edits to the sample GeoPackage (one step)."""
    data = {name: _read(gpkg, name) for name in ("roads", "parcels", "buildings")}
    touched = set()
    for kind, u, v, a, b in edits:
        layer = {"relabel_road": "roads", "move_road": "roads"}.get(kind)
        if layer is None:
            layer = "parcels" if "parcel" in kind else "buildings"
        geoms, f = data[layer]
        n = len(geoms)
        if kind == "add_building":
            geoms.append(_town_box(u, v, 8 + 40 * abs(a)))
            f["kind"].append("commercial" if b > 0 else "residential")
            f["year_built"].append(2025)
            if "bid" in f:
                f["bid"].append(max(f["bid"], default=0) + 1)
        elif kind == "add_parcel":
            geoms.append(_town_box(u, v, 30 + 60 * abs(a)))
            f["parcel_no"].append(f"N{len(geoms)}")
            f["owner"].append("New owner")
        elif n <= 1:
            continue
        elif kind in ("delete_building", "delete_parcel"):
            _delete(geoms, f, _pick(u, n))
        elif kind in ("move_building", "move_road"):
            i = _pick(u, n)
            geoms[i] = shapely.affinity.translate(geoms[i], a * 200, b * 200)
        elif kind == "reshape_building":
            i = _pick(u, n)
            if v < 0.5:
                geoms[i] = shapely.affinity.scale(geoms[i], 1 + 0.6 * a, 1 + 0.6 * b)
            else:
                geoms[i] = shapely.buffer(geoms[i], 1 + 10 * abs(a), quad_segs=4)
        elif kind == "relabel_road":
            f["name"][_pick(u, n)] = NAMES[_pick(v, len(NAMES))]
        elif kind == "building_kind":
            i = _pick(u, n)
            f["kind"][i] = "residential" if f["kind"][i] == "commercial" else "commercial"
        elif kind == "building_year":
            f["year_built"][_pick(u, n)] = 1800 + _pick(v, 200)
        elif kind == "parcel_owner":
            f["owner"][_pick(u, n)] = f"Owner {_pick(v, 10_000)}"
        touched.add(layer)
    for layer in touched:
        geoms, f = data[layer]
        _write(gpkg, layer, geoms, f, GTYPE[layer])


def _multiset_counts(before: Counter, after: Counter) -> tuple[int, int]:
    """(added, deleted) when features are matched by what they look like."""
    return sum((after - before).values()), sum((before - after).values())


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The sample county, seeded at levels 13-17 (copy it before changing anything)."""
    return make_sample(tmp_path_factory.mktemp("base") / "county")


@pytest.fixture(scope="module")
def keyed_base(tmp_path_factory) -> Path:
    """The sample county with a unique ``bid`` per building, configured as its key."""
    return make_sample(tmp_path_factory.mktemp("keyed") / "county", keyed=True)


@pytest.fixture
def proj(base, tmp_path) -> Path:
    """A private, seeded copy of the sample project."""
    return copy_project(base, tmp_path / "county", with_state=True)


HYPO = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- 2. equivalence under random edit sequences ----------------------------------------------


@HYPO
@given(steps=steps_st)
def test_updates_equal_fresh_seed(base, steps):
    with tempfile.TemporaryDirectory(prefix="td-eq-") as tmp:
        d = copy_project(base, Path(tmp) / "county", with_state=True)
        gpkg = gpkg_of(d)
        for edits in steps:
            before = {name: layer_state(gpkg, name, USED[name]) for name in USED}
            apply_edits(gpkg, edits)
            project = api.load_project(d)
            changes = detect_changes(project)
            assert changes.rebuild is None
            for name, attrs in USED.items():
                added, deleted = _multiset_counts(before[name], layer_state(gpkg, name, attrs))
                got = changes.layers[name]
                assert (got.added, got.deleted, got.modified) == (added, deleted, 0), name
            result = update(project)
            assert "rebuild" not in result
            assert_cache_equals_fresh_seed(d)
            assert not detect_changes(api.load_project(d)).any


# --- 3. keyed layers: edits are "modified" ---------------------------------------------------


def test_keyed_move_is_modified(keyed_base, tmp_path):
    d = copy_project(keyed_base, tmp_path / "county", with_state=True)
    gpkg = gpkg_of(d)
    geoms, f = _read(gpkg, "buildings")
    geoms[10] = shapely.affinity.translate(geoms[10], 35, -20)
    f["kind"][20] = "residential" if f["kind"][20] == "commercial" else "commercial"
    f["year_built"][30] = 1066  # not used by the style: no change at all
    _write(gpkg, "buildings", geoms, f, "Polygon")
    ch = detect_changes(api.load_project(d)).layers["buildings"]
    assert (ch.added, ch.modified, ch.deleted) == (0, 2, 0)
    assert len(ch.old_boxes) == 2 and len(ch.new_boxes) == 2
    # Without the key the same edits are two deletions and two additions.
    project = api.load_project(d)
    project = project.updated(layers={})
    ch = detect_changes(project).layers["buildings"]
    assert (ch.added, ch.modified, ch.deleted) == (2, 0, 2)
    update(api.load_project(d))
    assert_cache_equals_fresh_seed(d)


@settings(HYPO, max_examples=5)
@given(steps=st.lists(st.lists(edit_st, min_size=1, max_size=4), min_size=1, max_size=2))
def test_keyed_updates_equal_fresh_seed(keyed_base, steps):
    with tempfile.TemporaryDirectory(prefix="td-key-") as tmp:
        d = copy_project(keyed_base, Path(tmp) / "county", with_state=True)
        gpkg = gpkg_of(d)
        for edits in steps:
            before = layer_state(gpkg, "buildings", USED["buildings"], key="bid")
            apply_edits(gpkg, edits)
            after = layer_state(gpkg, "buildings", USED["buildings"], key="bid")
            want = (
                len(after.keys() - before.keys()),
                sum(before[k] != after[k] for k in before.keys() & after.keys()),
                len(before.keys() - after.keys()),
            )
            project = api.load_project(d)
            ch = detect_changes(project).layers["buildings"]
            assert (ch.added, ch.modified, ch.deleted) == want
            update(project)
            assert_cache_equals_fresh_seed(d)


# --- 4. the dirty set is exactly the meta-tiles Mapnik reads ---------------------------------


def _brute_force(scheme, level, boxes, pad, meta, window):
    rows, cols = window
    out = set()
    for r in range(rows):
        for c in range(cols):
            m = metatile_bounds(scheme, level, r, c, meta)
            for x0, y0, x1, y1 in boxes:
                if (
                    x0 <= m.xmax + pad
                    and x1 >= m.xmin - pad
                    and y0 <= m.ymax + pad
                    and y1 >= m.ymin - pad
                ):
                    out.add((r, c))
                    break
    return out


@st.composite
def grid_case(draw):
    scheme = draw(st.sampled_from([SMALL, UNBOUNDED, WM]))
    meta = draw(st.sampled_from([1, 2, 3, 4]))
    levels = list(range(3, 6)) if scheme is WM else scheme.levels
    level = draw(st.sampled_from(levels))
    pad = draw(
        st.one_of(
            st.just(0.0),
            st.sampled_from([0, 8, 64, 200]).map(lambda px: query_pad(scheme, level, px)),
        )
    )
    res = scheme.resolution(level)
    mw, mh = meta * scheme.tile_width * res, meta * scheme.tile_height * res
    rows, cols = metatile_grid(scheme, level, meta) if scheme.extent is not None else (6, 6)
    # Coordinates: anywhere around the window, or exactly on a meta-tile edge (± pad).
    lo_x, hi_x = scheme.origin_x - mw, scheme.origin_x + (cols + 1) * mw
    lo_y, hi_y = scheme.origin_y - (rows + 1) * mh, scheme.origin_y + mh

    def coord(axis):
        lo, hi = (lo_x, hi_x) if axis == "x" else (lo_y, hi_y)
        free = st.floats(lo, hi, allow_nan=False)
        n = cols if axis == "x" else rows

        def edge(args):
            k, side, off = args
            r, c = (0, k) if axis == "x" else (k, 0)
            b = metatile_bounds(scheme, level, r, c, meta)
            if axis == "x":
                v = b.xmin if side == 0 else b.xmax
            else:
                v = b.ymin if side == 0 else b.ymax
            return v + off * pad

        sides = st.tuples(st.integers(0, n - 1), st.integers(0, 1), st.sampled_from([-1, 0, 1]))
        edges = sides.map(edge)
        return st.one_of(free, edges)

    def one_box(parts):
        (x0, x1, y0, y1), point = parts
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if point == 1:
            x1 = x0
        elif point == 2:
            y1 = y0
        elif point == 3:
            x1, y1 = x0, y0
        return (x0, y0, x1, y1)

    boxes = draw(
        st.lists(
            st.tuples(
                st.tuples(coord("x"), coord("x"), coord("y"), coord("y")), st.integers(0, 3)
            ).map(one_box),
            min_size=0,
            max_size=6,
        )
    )
    # Every meta-tile a box can reach: the whole grid, or (unbounded) the window plus
    # the ring just beyond it (boxes reach one meta-tile past the window, pads less).
    window = (rows, cols) if scheme.extent is not None else (rows + 2, cols + 2)
    return scheme, level, boxes, pad, meta, window


@settings(max_examples=600, deadline=None)
@given(case=grid_case())
def test_metatiles_for_boxes_is_minimal(case):
    scheme, level, boxes, pad, meta, window = case
    got = metatiles_for_boxes(scheme, level, np.array(boxes, dtype=float).reshape(-1, 4), pad, meta)
    assert got.dtype == np.int64 and got.shape[1:] == (2,)
    got_set = {tuple(x) for x in got.tolist()}
    assert len(got_set) == len(got), "duplicates"
    assert got.tolist() == sorted(got.tolist()), "not sorted"
    assert all(0 <= r < window[0] and 0 <= c < window[1] for r, c in got_set)
    # Exact up to float rounding: every meta-tile a box meets by more than a few ulps is
    # planned, and none that it misses by more than that. (Boxes that touch a buffered
    # edge to the last ulp: see test_metatiles_for_boxes_exact_touch below.)
    eps = _ulps(scheme, boxes)
    must = _brute_force(scheme, level, boxes, pad - eps, meta, window)
    may = _brute_force(scheme, level, boxes, pad + eps, meta, window)
    assert must <= got_set, f"missed {sorted(must - got_set)}"
    assert got_set <= may, f"not minimal: {sorted(got_set - may)}"
    if all(_clear_of_edges(scheme, level, b, pad, meta, eps) for b in boxes):
        assert got_set == _brute_force(scheme, level, boxes, pad, meta, window)


def _ulps(scheme, boxes) -> float:
    """A few ulps of the largest coordinate involved."""
    big = max([abs(scheme.origin_x), abs(scheme.origin_y)] + [abs(v) for b in boxes for v in b])
    return 64 * float(np.spacing(big))


def _clear_of_edges(scheme, level, b, pad, meta, eps) -> bool:
    """True when no side of box ``b`` lies within ``eps`` of a buffered meta-tile edge."""
    res = scheme.resolution(level)
    mw, mh = meta * scheme.tile_width * res, meta * scheme.tile_height * res
    for v, o, size in ((b[0], scheme.origin_x, mw), (b[2], scheme.origin_x, mw)):
        for edge_pad in (pad, -pad):
            k = round((v + edge_pad - o) / size)
            if abs(o + k * size - edge_pad - v) <= eps:
                return False
    for v in (b[1], b[3]):
        for edge_pad in (pad, -pad):
            k = round((scheme.origin_y - v + edge_pad) / mh)
            if abs(scheme.origin_y - k * mh + edge_pad - v) <= eps:
                return False
    return True


def test_metatiles_for_boxes_exact_touch():
    """A box touching a meta-tile's buffered extent, computed exactly as Renderer does."""
    scheme, meta = WM, 4
    missed = []
    for level in (13, 17):
        pad = query_pad(scheme, level, 64)
        for r in range(700 * 2 ** (level - 13), 700 * 2 ** (level - 13) + 12):
            for c in range(325 * 2 ** (level - 13), 325 * 2 ** (level - 13) + 12):
                m = metatile_bounds(scheme, level, r, c, meta)
                query = shapely.box(m.xmin - pad, m.ymin - pad, m.xmax + pad, m.ymax + pad)
                for bx in (
                    (m.xmin - pad - 5, m.ymin + 1, m.xmin - pad, m.ymin + 2),
                    (m.xmax + pad, m.ymin + 1, m.xmax + pad + 5, m.ymin + 2),
                    (m.xmin + 1, m.ymax + pad, m.xmin + 2, m.ymax + pad + 5),
                    (m.xmin + 1, m.ymin - pad - 5, m.xmin + 2, m.ymin - pad),
                ):
                    assert shapely.intersects(query, shapely.box(*bx))  # the renderer reads it
                    got = metatiles_for_boxes(scheme, level, np.array([bx]), pad, meta)
                    if [r, c] not in got.tolist():
                        missed.append((level, r, c, bx))
    assert not missed, f"{len(missed)} touching boxes not planned, e.g. {missed[:3]}"


def test_metatiles_for_boxes_examples():
    scheme, level, meta = SMALL, 0, 4  # 1024 m meta-tiles, 3 x 3 of them
    pad = 0.0
    m = metatile_bounds(scheme, level, 1, 1, meta)
    # A point on a shared corner touches all four meta-tiles around it.
    corner = np.array([[m.xmin, m.ymin, m.xmin, m.ymin]])
    got = metatiles_for_boxes(scheme, level, corner, pad, meta)
    assert got.tolist() == [[1, 0], [1, 1], [2, 0], [2, 1]]
    # Inside, away from edges: one meta-tile.
    cx, cy = (m.xmin + m.xmax) / 2, (m.ymin + m.ymax) / 2
    got = metatiles_for_boxes(scheme, level, np.array([[cx, cy, cx + 1, cy + 1]]), pad, meta)
    assert got.tolist() == [[1, 1]]
    # Outside the grid: nothing.
    ox, oy = scheme.origin_x, scheme.origin_y
    far = [ox - 5000, oy + 10, ox - 4000, oy + 20]
    assert metatiles_for_boxes(scheme, level, np.array([far]), pad, meta).shape == (0, 2)
    assert metatiles_for_boxes(scheme, level, np.zeros((0, 4)), pad, meta).shape == (0, 2)


# --- 5. attributes the style does not use -------------------------------------------------------


def test_unused_attribute_edit_renders_nothing(proj):
    gpkg = gpkg_of(proj)
    geoms, f = _read(gpkg, "parcels")
    f["owner"] = [f"Someone else {i}" for i in range(len(geoms))]
    _write(gpkg, "parcels", geoms, f, "Polygon")
    changes = detect_changes(api.load_project(proj))
    assert not changes.layers["parcels"].changed
    assert not changes.any
    result = update(api.load_project(proj))
    assert result["tiles_rendered"] == 0
    assert result["metatiles_rendered"] == 0
    assert result["tiles_written"] == 0
    assert_cache_equals_fresh_seed(proj)


# --- 6. style and level changes -------------------------------------------------------------------


def test_style_change_rebuilds(proj):
    set_processes(proj, 2)
    style = proj / "style.xml"
    text = style.read_text(encoding="utf-8")
    assert "#aad3df" in text
    style.write_text(text.replace("#aad3df", "#6f9fc0"), encoding="utf-8")
    changes = detect_changes(api.load_project(proj))
    assert changes.rebuild and "style" in changes.rebuild
    before = read_cache(proj)
    result = update(api.load_project(proj))
    assert result.get("rebuild") and "style" in result["rebuild"]
    assert read_cache(proj) != before
    assert_cache_equals_fresh_seed(proj)
    assert not detect_changes(api.load_project(proj)).any


def test_level_added_with_data_edit(proj):
    set_processes(proj, 2)
    project = api.load_project(proj)
    project = project.updated(levels="13-18")
    project.save()
    # A data edit in the same run: old levels get its dirty tiles, level 18 everything.
    geoms, f = _read(gpkg_of(proj), "buildings")
    geoms[5] = shapely.affinity.translate(geoms[5], 60, 0)
    _write(gpkg_of(proj), "buildings", geoms, f, "Polygon")
    changes = detect_changes(api.load_project(proj))
    assert changes.rebuild is None
    assert changes.new_levels == [18] and changes.dropped_levels == []
    assert changes.layers["buildings"].changed
    update(api.load_project(proj))
    assert read_cache_counts(proj).get(18, 0) > 0
    assert_cache_equals_fresh_seed(proj)
    assert not detect_changes(api.load_project(proj)).any


def test_lowest_level_dropped(proj):
    counts = read_cache_counts(proj)
    project = api.load_project(proj)
    project = project.updated(levels="14-17")
    project.save()
    changes = detect_changes(api.load_project(proj))
    assert changes.dropped_levels == [13] and changes.new_levels == []
    result = update(api.load_project(proj))
    assert result["tiles_removed"] == counts[13]
    assert set(read_cache_counts(proj)) == {14, 15, 16, 17}
    assert_cache_equals_fresh_seed(proj)
    assert not detect_changes(api.load_project(proj)).any


def test_top_levels_dropped(proj):
    counts = read_cache_counts(proj)
    project = api.load_project(proj)
    project = project.updated(levels="13-15")
    project.save()
    changes = detect_changes(api.load_project(proj))
    assert changes.dropped_levels == [16, 17] and changes.new_levels == []
    result = update(api.load_project(proj))
    assert result["tiles_removed"] == counts[16] + counts[17]
    assert set(read_cache_counts(proj)) == {13, 14, 15}
    assert_cache_equals_fresh_seed(proj)


def read_cache_counts(project_dir: Path) -> dict[int, int]:
    return dict(Counter(lv for lv, _r, _c in read_cache(project_dir)))


# --- 7. crash safety ---------------------------------------------------------------------------

#: Runs ``tiledelta update`` and SIGKILLs itself right after the N-th bundle write.
SELF_KILL = """
import os, signal, sys
project_dir, after = sys.argv[1], int(sys.argv[2])
from tiledelta.stores.compact import CompactCache
real = CompactCache.put_many
calls = [0]
def put_many(self, tiles):
    n = real(self, tiles)
    calls[0] += 1
    if calls[0] >= after:
        os.kill(os.getpid(), signal.SIGKILL)
    return n
CompactCache.put_many = put_many
from tiledelta.cli import main
sys.argv = ["tiledelta", "update", "--project", project_dir]
main()
"""


def _journal(project_dir: Path) -> str | None:
    db = project_dir / ".tiledelta" / "state.sqlite"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = con.execute("SELECT value FROM meta WHERE key='journal'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


def _assert_cache_readable(project_dir: Path) -> None:
    tiles = read_cache(project_dir)
    assert tiles
    for addr, data in tiles.items():
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except Exception as exc:  # pragma: no cover - reported as a failure
            pytest.fail(f"tile {addr} does not decode: {exc}")


def _big_edit(gpkg: Path) -> None:
    """Change something visible on every level: delete the bay, move the highway."""
    geoms, f = _read(gpkg, "water")
    _delete(geoms, f, f["name"].index("Youngs Bay"))
    _write(gpkg, "water", geoms, f, "Polygon")
    geoms, f = _read(gpkg, "roads")
    i = f["name"].index("Highway 30")
    geoms[i] = shapely.affinity.translate(geoms[i], 0, -150)
    _write(gpkg, "roads", geoms, f, "LineString")


def _run_self_kill(project_dir: Path, after_writes: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", SELF_KILL, str(project_dir), str(after_writes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    return proc


def test_sigkill_mid_update_then_rerun(proj):
    _big_edit(gpkg_of(proj))
    # Move the river too, so every meta-tile of every level is dirty (a long run).
    geoms, f = _read(gpkg_of(proj), "water")
    i = f["name"].index("Columbia River")
    geoms[i] = shapely.affinity.translate(geoms[i], 0, 300)
    _write(gpkg_of(proj), "water", geoms, f, "Polygon")
    proc = subprocess.Popen(
        [str(CLI), "update", "--project", str(proj)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while _journal(proj) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        journal_seen = _journal(proj) is not None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip(f"update finished (rc {proc.returncode}) before it could be killed")
    assert journal_seen
    _assert_cache_readable(proj)
    changes = detect_changes(api.load_project(proj))
    assert changes.layers["water"].changed and changes.layers["roads"].changed
    assert changes.journal, "the unfinished run's journal is gone"
    update(api.load_project(proj))
    assert_cache_equals_fresh_seed(proj)
    assert _journal(proj) is None


def test_crash_after_first_bundle_then_rerun(proj):
    _big_edit(gpkg_of(proj))
    _run_self_kill(proj, 1)
    assert _journal(proj) is not None
    _assert_cache_readable(proj)
    changes = detect_changes(api.load_project(proj))
    assert changes.layers["water"].deleted == 1 and changes.layers["roads"].changed
    update(api.load_project(proj))
    assert_cache_equals_fresh_seed(proj)
    assert not detect_changes(api.load_project(proj)).any


def test_crash_then_revert_data_uses_journal(proj, tmp_path):
    gpkg = gpkg_of(proj)
    original = tmp_path / "county-A.gpkg"
    shutil.copy2(gpkg, original)
    reference = read_cache(proj)  # the cache of data A
    _big_edit(gpkg)  # data B
    _run_self_kill(proj, 1)  # some tiles of B are in the cache now
    assert read_cache(proj) != reference, "the crashed run wrote nothing; the test is moot"
    shutil.copy2(original, gpkg)  # back to data A
    changes = detect_changes(api.load_project(proj))
    assert not any(c.changed for c in changes.layers.values())  # the snapshot is still A
    assert changes.journal and changes.any
    update(api.load_project(proj))
    assert read_cache(proj) == reference
    assert_cache_equals_fresh_seed(proj)
    assert _journal(proj) is None


# --- 8. the project lock -------------------------------------------------------------------------


def test_lock_blocks_a_second_run(proj):
    project = api.load_project(proj)
    with project_lock(project):
        with pytest.raises(LockedError, match="another tiledelta run"):
            update(api.load_project(proj))
        proc = subprocess.run(
            [str(CLI), "update", "--project", str(proj)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 3  # busy (errors.EXIT_BUSY)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "another tiledelta run" in lines[0]
    # Released: the next run goes through.
    update(api.load_project(proj))


def test_lock_held_by_another_process(proj):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from tiledelta.api import load_project\n"
            "from tiledelta.project import project_lock\n"
            "with project_lock(load_project(sys.argv[1])):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(proj),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            update(api.load_project(proj))
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    update(api.load_project(proj))


# --- 9. real data: Clatsop County buildings -------------------------------------------------------

CLATSOP_STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="buildings">
    <Rule>
      <PolygonSymbolizer fill="#d9d0c9"/>
      <LineSymbolizer stroke="#8a7f75" stroke-width="0.5"/>
    </Rule>
  </Style>
  <Layer name="buildings" srs="epsg:3857">
    <StyleName>buildings</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/buildings.gpkg</Parameter>
      <Parameter name="layer">buildings</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


@pytest.mark.skipif(
    not (CLATSOP / "clatsop_buildings.shp").exists(),
    reason=f"Clatsop County data not found at {CLATSOP}",
)
def test_clatsop_update_equals_fresh_seed(tmp_path):
    d = tmp_path / "clatsop"
    (d / "data").mkdir(parents=True)
    gpkg = d / "data" / "buildings.gpkg"
    meta, geoms, values = _read_shapefile(CLATSOP / "clatsop_buildings.shp")
    pyogrio.raw.write(
        str(gpkg),
        geoms,
        values,
        meta["fields"],
        layer="buildings",
        driver="GPKG",
        geometry_type="Unknown",
        crs=meta["crs"],
    )
    (d / "style.xml").write_text(CLATSOP_STYLE, encoding="utf-8")
    api.init_project(d, style=d / "style.xml", levels="14-17", cache_kind="compact", force=True)
    set_processes(d, 2)
    seed(api.load_project(d))

    shp = list(shapely.from_wkb(geoms))
    fields = {name: list(v) for name, v in zip(meta["fields"], values, strict=True)}
    n = len(shp)
    order = np.argsort([g.centroid.x + g.centroid.y for g in shp])  # spread over the county
    gone = sorted({int(order[int(k * (n - 1) / 29)]) for k in range(30)})
    moved = [int(order[int((k + 0.5) * (n - 1) / 5)]) for k in range(5)]
    moved = [i for i in moved if i not in gone]
    for i in moved:
        shp[i] = shapely.affinity.translate(shp[i], 45, -30)
    next_id = max(int(x) for x in fields["FID_1"]) + 1
    new = []
    for k in range(5):
        x0, y0 = shp[int(order[int((k + 0.25) * (n - 1) / 5)])].centroid.coords[0]
        new.append(box(x0 + 80, y0 + 80, x0 + 100, y0 + 96))
    for i in reversed(gone):
        del shp[i]
        for v in fields.values():
            del v[i]
    shp.extend(new)
    fields["FID_1"].extend(range(next_id, next_id + 5))
    pyogrio.raw.write(
        str(gpkg),
        np.asarray(shapely.to_wkb(shp), dtype=object),
        [np.asarray(v) for v in fields.values()],
        list(fields),
        layer="buildings",
        driver="GPKG",
        geometry_type="Unknown",
        crs=meta["crs"],
    )
    changes = detect_changes(api.load_project(d))
    ch = changes.layers["buildings"]
    assert (ch.added, ch.deleted) == (5 + len(moved), len(gone) + len(moved))
    result = update(api.load_project(d))
    assert 0 < result["metatiles_rendered"] < 200
    assert_cache_equals_fresh_seed(d)


def _read_shapefile(path: Path):
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), return_fids=True)
    return meta, geoms, values


def test_helpers_detect_a_stale_tile(proj):
    """The oracle itself: an edit without an update is caught as a difference."""
    geoms, f = _read(gpkg_of(proj), "water")
    _delete(geoms, f, 1)
    _write(gpkg_of(proj), "water", geoms, f, "Polygon")
    with pytest.raises(pytest.fail.Exception, match="level 13"):
        assert_cache_equals_fresh_seed(proj)


def test_sample_town_extent_matches_data():
    """The edit generator's town box covers the sample buildings (guards the constants)."""
    with tempfile.TemporaryDirectory() as tmp:
        sample.generate(Path(tmp))
        b = pyogrio.read_info(str(Path(tmp) / "data" / "county.gpkg"), layer="buildings")[
            "total_bounds"
        ]
    assert TOWN.xmin <= b[0] and b[2] <= TOWN.xmax
    assert TOWN.ymin <= b[1] and b[3] <= TOWN.ymax
    assert math.isclose(TOWN.xmax - TOWN.xmin, sample.NX * PITCH + sample.STREET)
