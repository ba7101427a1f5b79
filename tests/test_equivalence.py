"""Property-based equivalence of ``update`` and a fresh ``seed``, on a multi-layer project.

The project is the sample county as shapefiles (which Mapnik and tiledelta read in file
order), drawn by a style like test_fidelity's: water, parcels (interior labels) and
buildings as polygons, roads as lines with line-placed labels, points of interest with
markers and big-halo, offset labels; rendered by the real process pool (2 processes).
The town is shifted so that a level-14 bundle corner (so a bundle and meta-tile corner of
every level below) runs through it: moves of tens of metres to a few kilometres cross
meta-tile and bundle boundaries.

Hypothesis draws sequences of steps, each a few edits: features added, duplicated,
deleted, moved and reshaped in every layer; label (used) and unused attribute edits; rows
reversed, rotated, swapped with an overlapping feature's, cut and pasted at the end, or
rewritten as they were; a layer's ``.prj`` rewritten to another CRS and back (it moves the
features of layers without a ``<Layer srs>``, and is ignored where the layer declares one,
as in Mapnik); the point symbol switched to ``marker.svg`` and the SVG edited. After every
step ``update`` runs and the cache is compared with a fresh seed of the same data: every
tile, byte for byte, and the metadata (``conf.xml`` and ``conf.cdi``, or the MBTiles
``metadata`` table).

Every update is also checked against an independent account of what it must render: the
meta-tiles (from Web Mercator's definition, not tiledelta's grid code) whose drawn
features, per layer and in draw order, differ before and after the step; so a no-op for
the picture renders nothing, and a change of the style or its SVG rebuilds everything.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import shapely
import shapely.affinity
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, box
from test_update import copy_project

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed, update
from tiledelta.project import Project
from tiledelta.stores import open_project_store, read_compact_cache

LEVELS = "14-15"  # 14-16 doubles the run time (measured); the grid corner is at every level
LEVEL_LIST = (14, 15)
PROCESSES = 2  # the real process pool

# --- the grid, from Web Mercator's definition (Esri's constants) ----------------------------

HALF = 20037508.342787
RES0 = 156543.033928
META, TILE, BUFFER = 4, 256, 64
#: what the renderer adds to Mapnik's buffered query so float rounding never drops a feature
QUERY_SLACK = 1e-9
BUNDLE_14 = RES0 / 2**14 * TILE * 128  # a level-14 bundle, in metres (also a corner below)


def _res(level: int) -> float:
    return RES0 / 2**level


# --- the project -------------------------------------------------------------------------------

LAYERS = ("water", "parcels", "buildings", "roads", "pois")
GTYPE = {
    "water": "Polygon",
    "parcels": "Polygon",
    "buildings": "Polygon",
    "roads": "LineString",
    "pois": "Point",
}
#: the attribute each layer's style draws (a label), if any
USED = {"water": None, "parcels": "parcel_no", "buildings": None, "roads": "name", "pois": "label"}
#: an attribute the style never reads
UNUSED = {
    "water": "name",
    "parcels": "owner",
    "buildings": "year_built",
    "roads": "class",
    "pois": "note",
}

STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#f4f1ea" buffer-size="64">
  <Style name="water"><Rule><PolygonSymbolizer fill="#aad3df"/></Rule></Style>
  <Style name="parcels">
    <Rule>
      <PolygonSymbolizer fill="#ece7dc" fill-opacity="0.8"/>
      <LineSymbolizer stroke="#c9bfae" stroke-width="0.7"/>
      <TextSymbolizer face-name="DejaVu Sans Book" size="9" fill="#7a6f5f"
          placement="interior">[parcel_no]</TextSymbolizer>
    </Rule>
  </Style>
  <Style name="buildings">
    <Rule>
      <PolygonSymbolizer fill="#cfc6bd" fill-opacity="0.85"/>
      <LineSymbolizer stroke="#a39585" stroke-width="0.5"/>
    </Rule>
  </Style>
  <Style name="roads">
    <Rule>
      <LineSymbolizer stroke="#ffffff" stroke-width="5" stroke-linecap="round"/>
      <TextSymbolizer face-name="DejaVu Sans Book" size="11" fill="#333333"
          halo-fill="#ffffff" halo-radius="2" placement="line"
          spacing="300">[name]</TextSymbolizer>
    </Rule>
  </Style>
  <Style name="pois">
    <Rule>
      @MARKER@
      <TextSymbolizer face-name="DejaVu Sans Bold" size="12" fill="#202020"
          halo-fill="#ffffff" halo-radius="4" dy="-14" dx="6"
          placement="point">[label]</TextSymbolizer>
    </Rule>
  </Style>
@LAYERS@
</Map>
"""
MARKER_BUILTIN = (
    '<MarkersSymbolizer fill="#d95f02" width="9" height="9" stroke="#ffffff" allow-overlap="true"/>'
)
MARKER_SVG = '<MarkersSymbolizer file="marker.svg" allow-overlap="true"/>'
SVG_COLOURS = ("#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#000000")


def _svg(colour: str, size: float) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{size:.1f}" height="{size:.1f}" viewBox="0 0 10 10">'
        f'<circle cx="5" cy="5" r="4" fill="{colour}" stroke="#ffffff" stroke-width="1"/>'
        "</svg>\n"
    )


#: As in Mapnik, a <Layer srs> says where the features are and the data's own CRS (the .prj)
#: is ignored; only layers that declare none take their .prj.
LAYER_SRS = {
    "water": "epsg:3857",
    "parcels": None,
    "buildings": "epsg:3857",
    "roads": None,
    "pois": None,
}
LAYER_XML = """  <Layer name="{name}"{srs}><StyleName>{name}</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/{name}.shp</Parameter></Datasource></Layer>"""


def _style(svg: bool) -> str:
    layers = "\n".join(
        LAYER_XML.format(name=name, srs=f' srs="{LAYER_SRS[name]}"' if LAYER_SRS[name] else "")
        for name in LAYERS
    )
    return STYLE.replace("@MARKER@", MARKER_SVG if svg else MARKER_BUILTIN).replace(
        "@LAYERS@", layers
    )


# The sample town, moved so that a level-14 bundle corner lies 37 m west and 53 m north of
# its centre: the corner's two grid lines cut the town into four bundles at every level.
_W = sample.NX * (sample.BLOCK + sample.STREET) + sample.STREET
_H = sample.NY * (sample.BLOCK + sample.STREET) + sample.STREET
_CX, _CY = sample.X0 + _W / 2, sample.Y0 + _H / 2
CORNER_X = -HALF + round((_CX + HALF) / BUNDLE_14) * BUNDLE_14
CORNER_Y = HALF - round((HALF - _CY) / BUNDLE_14) * BUNDLE_14
SHIFT = (CORNER_X + 37 - _CX, CORNER_Y - 53 - _CY)
TOWN_X, TOWN_Y = _CX + SHIFT[0], _CY + SHIFT[1]

#: .prj contents a CRS edit writes: the coordinates stay, their meaning changes
CRS_WKT = {
    "3857": pyproj.CRS("EPSG:3857").to_wkt("WKT1_ESRI"),  # what GDAL writes for EPSG:3857
    "3395": pyproj.CRS("EPSG:3395").to_wkt("WKT1_ESRI"),  # ~31 km north of where they were
    "shifted": pyproj.CRS(  # Web Mercator with a false easting/northing: 1500 m W, 800 m N
        "+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=1500 +y_0=-800 +k=1 "
        "+units=m +nadgrids=@null +wktext +no_defs"
    ).to_wkt("WKT1_ESRI"),
}


def _shp(d: Path, layer: str) -> Path:
    return d / "shp" / f"{layer}.shp"


def _write_shapefile(path: Path, geoms: list, fields: dict[str, np.ndarray], gtype: str) -> None:
    pyogrio.raw.write(
        str(path),
        np.asarray(shapely.to_wkb(geoms), dtype=object) if geoms else np.array([], dtype=object),
        list(fields.values()),
        fields=list(fields),
        geometry_type=gtype,
        crs="EPSG:3857",
        driver="ESRI Shapefile",
    )


def _make_template(root: Path) -> Path:
    """The shifted sample county as shapefiles, the style, and an (unused) marker.svg."""
    sample.generate(root)
    gpkg = root / "data" / "county.gpkg"
    (root / "shp").mkdir()
    for layer in ("water", "parcels", "buildings", "roads"):
        meta, _fids, wkb, values = pyogrio.raw.read(str(gpkg), layer=layer)
        geoms = list(shapely.transform(shapely.from_wkb(wkb), lambda xy: xy + np.array(SHIFT)))
        fields = dict(zip(meta["fields"], values, strict=True))
        _write_shapefile(_shp(root, layer), geoms, fields, GTYPE[layer])
    _meta, _fids, wkb, _values = pyogrio.raw.read(str(_shp(root, "buildings")))
    pts = list(shapely.centroid(shapely.from_wkb(wkb[::7])))
    fields = {
        "label": np.array([f"Site {i}" for i in range(len(pts))], dtype=object),
        "note": np.array([f"note {i}" for i in range(len(pts))], dtype=object),
    }
    _write_shapefile(_shp(root, "pois"), pts, fields, "Point")
    shutil.rmtree(root / "data")
    (root / "style.xml").write_text(_style(svg=False), encoding="utf-8")
    (root / "marker.svg").write_text(_svg(SVG_COLOURS[0], 10), encoding="utf-8")
    return root


def _make_project(root: Path, cache_kind: str) -> Path:
    _make_template(root)
    init_project(root, style=root / "style.xml", levels=LEVELS, cache_kind=cache_kind, force=True)
    Project.load(root).updated(render={"processes": PROCESSES}).save()
    result = seed(load_project(root), notify=False)
    assert result["metatiles_rendered"] == _count(_full(_drawn(root)))
    return root


@pytest.fixture(scope="module")
def compact_base(tmp_path_factory) -> Path:
    return _make_project(tmp_path_factory.mktemp("eq-compact") / "county", "compact")


@pytest.fixture(scope="module")
def mbtiles_base(tmp_path_factory) -> Path:
    return _make_project(tmp_path_factory.mktemp("eq-mbtiles") / "county", "mbtiles")


# --- reading the cache (read-only: nothing is rewritten by looking) --------------------------


def _tiles(d: Path) -> dict[tuple[int, int, int], bytes]:
    project = load_project(d)
    if project.config.cache.kind == "compact":
        opened = read_compact_cache(project.cache_path)
    else:
        opened = open_project_store(project, readonly=True)
    out = {}
    with opened as store:
        for addr in store.iter_tiles():
            data = store.get(*addr)
            assert data is not None, f"listed tile {addr} has no data"
            out[addr] = data
    return out


def _metadata(d: Path) -> dict[str, object]:
    """conf.xml and conf.cdi of a compact cache; the metadata table of an MBTiles file."""
    project = load_project(d)
    path = project.cache_path
    if project.config.cache.kind == "compact":
        return {name: (path / name).read_bytes() for name in ("conf.xml", "conf.cdi")}
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT name, value FROM metadata").fetchall())
    finally:
        con.close()


def _compact_files(d: Path) -> dict[str, bytes] | None:
    """Every file of a compact cache (conf.xml, conf.cdi, bundles) by relative path."""
    project = load_project(d)
    if project.config.cache.kind != "compact":
        return None
    root = project.cache_path
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _diff_report(got: dict, want: dict) -> str:
    lines = []
    for lv in sorted({a[0] for a in got} | {a[0] for a in want}):
        g = {a for a in got if a[0] == lv}
        w = {a for a in want if a[0] == lv}
        missing, extra = sorted(w - g), sorted(g - w)
        differ = sorted(a for a in g & w if got[a] != want[a])
        if missing or extra or differ:
            lines.append(
                f"level {lv}: {len(missing)} missing {missing[:6]}, {len(extra)} extra "
                f"{extra[:6]}, {len(differ)} differ {differ[:6]}"
            )
    return "\n".join(lines)


def assert_equals_fresh_seed(d: Path, drawn: Drawn | None = None) -> None:
    """Tiles and metadata of ``d``'s cache equal those of a fresh seed of its data."""
    got, got_meta, got_files = _tiles(d), _metadata(d), _compact_files(d)
    with tempfile.TemporaryDirectory(prefix="eq-fresh-") as tmp:
        # The same folder name: MBTiles records it as the tileset's name.
        fresh = copy_project(d, Path(tmp) / d.name, with_state=False)
        result = seed(load_project(fresh), notify=False)
        want, want_meta, want_files = _tiles(fresh), _metadata(fresh), _compact_files(fresh)
    assert result["metatiles_rendered"] == _count(_full(_drawn(d) if drawn is None else drawn))
    if got != want:
        pytest.fail("the cache differs from a fresh seed:\n" + _diff_report(got, want))
    for key in sorted(set(got_meta) | set(want_meta)):
        assert got_meta.get(key) == want_meta.get(key), f"metadata {key!r} differs"
    if got_files is not None:  # a bundle's bytes follow from its tiles: the files are equal too
        differ = sorted(
            k for k in set(got_files) | set(want_files) if got_files.get(k) != want_files.get(k)
        )
        assert not differ, f"cache files differ from a fresh seed's: {differ[:8]}"


# --- what the renderer sees, and which meta-tiles a step must render -------------------------

_TARGET = pyproj.CRS("EPSG:3857")
Box = tuple[float, float, float, float]


class Drawn:
    """What the renderer draws: per layer, in draw order, (identity, box in Web Mercator).

    Features with equal identities draw alike (the same geometry where it lands on the map,
    the same value of the attribute the style draws)."""

    def __init__(self, layers: dict[str, list[tuple[bytes, Box]]]) -> None:
        self.layers = layers
        self._sequences: dict[int, dict[tuple[int, int], list]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Drawn) and self.layers == other.layers

    __hash__ = None  # type: ignore[assignment]

    def sequences(self, level: int) -> dict[tuple[int, int], list]:
        """Per meta-tile, what it draws: (layer, identity) in layer order, then draw order."""
        if level not in self._sequences:
            seqs: dict[tuple[int, int], list] = {}
            for layer in LAYERS:
                rows = self.layers[layer]
                if not rows:
                    continue
                ranges = _reach_ranges(np.array([bx for _i, bx in rows]), level)
                for (ident, _bx), (r0, r1, c0, c1) in zip(rows, ranges, strict=True):
                    for r in range(r0, r1 + 1):
                        for c in range(c0, c1 + 1):
                            seqs.setdefault((r, c), []).append((layer, ident))
            self._sequences[level] = seqs
        return self._sequences[level]


def _drawn(d: Path) -> Drawn:
    """What the renderer draws, read from the files: each geometry where the layer's srs
    (or, without one, its .prj) puts it, with the value of the attribute the style draws."""
    out = {}
    for layer in LAYERS:
        meta, _fids, wkb, values = pyogrio.raw.read(str(_shp(d, layer)))
        geoms = shapely.from_wkb(wkb)
        crs = pyproj.CRS.from_user_input(LAYER_SRS[layer] or meta["crs"])
        if len(geoms) and not crs.equals(_TARGET, ignore_axis_order=True):
            tr = pyproj.Transformer.from_crs(crs, _TARGET, always_xy=True)
            geoms = shapely.transform(
                geoms, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
            )
        by = dict(zip(meta["fields"], values, strict=True))
        used = [repr(v) for v in by[USED[layer]]] if USED[layer] else [""] * len(geoms)
        out[layer] = [
            (hashlib.blake2b(w + u.encode(), digest_size=16).digest(), tuple(bx))
            for w, u, bx in zip(
                shapely.to_wkb(geoms), used, shapely.bounds(geoms).tolist(), strict=True
            )
        ]
    return Drawn(out)


def _reach_ranges(boxes: np.ndarray, level: int) -> list[tuple[int, int, int, int]]:
    """Per box, the (mrow, mcol) ranges (r0, r1, c0, c1), inclusive, of the meta-tiles whose
    extent grown by the buffer (and the renderer's float slack) meets it, touching included."""
    res = _res(level)
    span = META * TILE * res
    pad = BUFFER * res + QUERY_SLACK * (2 * HALF + TILE * res)
    c0 = np.ceil((boxes[:, 0] - pad + HALF) / span) - 1
    c1 = np.floor((boxes[:, 2] + pad + HALF) / span)
    r0 = np.ceil((HALF - boxes[:, 3] - pad) / span) - 1
    r1 = np.floor((HALF - boxes[:, 1] + pad) / span)
    out = np.column_stack([np.maximum(r0, 0), r1, np.maximum(c0, 0), c1]).astype(np.int64)
    return [tuple(row) for row in out.tolist()]


def _reach(b: Box, level: int) -> set[tuple[int, int]]:
    """The meta-tiles that box ``b`` reaches at ``level``."""
    ((r0, r1, c0, c1),) = _reach_ranges(np.array([b]), level)
    return {(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}


def _needed(old: Drawn, new: Drawn) -> dict[int, set[tuple[int, int]]]:
    """Per level, the meta-tiles whose picture can change from ``old`` to ``new``."""
    out = {}
    for level in LEVEL_LIST:
        a, b = old.sequences(level), new.sequences(level)
        out[level] = {m for m in set(a) | set(b) if a.get(m) != b.get(m)}
    return out


def _full(drawn: Drawn) -> dict[int, set[tuple[int, int]]]:
    """Per level, the meta-tiles a seed renders (those any feature reaches)."""
    return {level: set(drawn.sequences(level)) for level in LEVEL_LIST}


def _count(per_level: dict[int, set]) -> int:
    return sum(len(v) for v in per_level.values())


def _style_inputs(d: Path) -> tuple[bytes, bytes | None]:
    """What the style's digest covers: its bytes, and marker.svg's when it is used."""
    text = (d / "style.xml").read_bytes()
    return text, (d / "marker.svg").read_bytes() if b"marker.svg" in text else None


def check_update(d: Path, what: object, old: Drawn, old_style: tuple) -> tuple[dict, Drawn]:
    """Run ``update`` after an edit (``what``) from ``old`` and check what it rendered:
    exactly the meta-tiles whose drawn features changed, nothing for a picture no-op, and
    everything after a change of the style or its SVG. Return the summary and the data."""
    new = _drawn(d)
    result = update(load_project(d), notify=False)
    rendered = result["metatiles_rendered"]
    note(f"{what}: {result['kind']}, {rendered} meta-tiles, changes {result['changes']}")
    if _style_inputs(d) != old_style:  # the style or its SVG changed: everything is rebuilt
        assert result["kind"] == "rebuild", result
        assert rendered == _count(_full(new))
        return result, new
    assert result["kind"] == "update", result
    if old == new:  # nothing the renderer draws changed: no work at all
        assert (rendered, result["tiles_written"], result["tiles_removed"]) == (0, 0, 0), result
    need = _needed(old, new)
    planned = {int(lv): s["tiles"] // (META * META) for lv, s in result["levels"].items()}
    assert planned == {lv: len(need[lv]) for lv in LEVEL_LIST}, (planned, need)
    assert rendered == _count(need)
    return result, new


# --- edits -------------------------------------------------------------------------------------

NAMES = ("Astor Way", "Bond St", "Columbia Blvd", "W Marine Dr", "Exchange St", "Site 3", "77")


def _pick(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


class Layer:
    """One shapefile layer in memory: rows of (geometry, attributes), in file order."""

    def __init__(self, d: Path, name: str) -> None:
        self.name, self.path = name, _shp(d, name)
        meta, _fids, wkb, values = pyogrio.raw.read(str(self.path))
        self.dtypes = {f: np.asarray(v).dtype for f, v in zip(meta["fields"], values, strict=True)}
        cols = [np.asarray(v).tolist() for v in values]
        geoms = list(shapely.from_wkb(wkb)) if len(wkb) else []
        self.rows = [
            (g, {f: c[i] for f, c in zip(meta["fields"], cols, strict=True)})
            for i, g in enumerate(geoms)
        ]

    def write(self) -> None:
        """Rewrite the shapefile in the rows' order, keeping its .prj as it is."""
        prj = self.path.with_suffix(".prj").read_bytes()
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            self.path.with_suffix(ext).unlink(missing_ok=True)
        fields = {
            f: np.array([r[1][f] for r in self.rows], dtype=dt) for f, dt in self.dtypes.items()
        }
        _write_shapefile(self.path, [r[0] for r in self.rows], fields, GTYPE[self.name])
        self.path.with_suffix(".prj").write_bytes(prj)

    def new_attrs(self, label: str) -> dict:
        attrs = {}
        for f, dt in self.dtypes.items():
            if f == USED[self.name]:
                attrs[f] = label
            elif dt.kind == "O":  # text
                attrs[f] = "new"
            else:  # integer ids and years
                attrs[f] = max((int(r[1][f]) for r in self.rows), default=0) + 1
        return attrs


def _new_geometry(layer: str, u: float, v: float, a: float, b: float):
    """A new feature within 2 km of the town's centre (often across the grid corner)."""
    x, y = TOWN_X + (u - 0.5) * 4000, TOWN_Y + (v - 0.5) * 4000
    if layer == "pois":
        return Point(x, y)
    if layer == "roads":
        return LineString([(x, y), (x + 30 + 400 * a, y + 400 * b), (x + 60 + 600 * a, y - 200)])
    if layer == "water":
        return shapely.buffer(Point(x, y), 40 + 400 * abs(a), quad_segs=8)
    size = (30 + 60 * abs(a)) if layer == "parcels" else (8 + 40 * abs(a))
    return box(x, y, x + size, y + size * (0.5 + 0.5 * abs(b)))


def _reshape(g, u: float, v: float, a: float, b: float):
    if g.geom_type == "Point":  # a nudge
        return shapely.affinity.translate(g, 2 * a, 2 * b)
    if g.geom_type == "LineString":
        coords = list(g.coords)
        if v < 0.5:
            k = _pick(u, len(coords))
            coords[k] = (coords[k][0] + 80 * a, coords[k][1] + 80 * b)
        else:
            coords.append((coords[-1][0] + 150 * a + 5, coords[-1][1] + 150 * b))
        return LineString(coords)
    if v < 0.5:
        return shapely.affinity.scale(g, 1 + 0.6 * a, 1 + 0.6 * b)
    return shapely.buffer(g, 1 + 10 * abs(a), quad_segs=4)


def _overlapping(rows: list, i: int, v: float) -> int:
    """A row other than ``i`` whose box meets row ``i``'s (the next row when none does)."""
    tree = shapely.STRtree(shapely.envelope([r[0] for r in rows]))
    near = sorted(int(j) for j in tree.query(shapely.envelope(rows[i][0])) if j != i)
    return near[_pick(v, len(near))] if near else (i + 1) % len(rows)


def apply_edit(d: Path, layers: dict[str, Layer], edit: tuple) -> str | None:
    """Apply one edit; return the layer whose rows must be written (None: nothing, or done)."""
    kind, name, u, v, a, b = edit
    if kind == "crs":
        choice = ("3857", "3395", "shifted")[_pick(u, 3)]
        _shp(d, name).with_suffix(".prj").write_text(CRS_WKT[choice], encoding="utf-8")
        return None
    if kind == "svg":
        if v < 0.5:  # switch the point symbol between the built-in marker and marker.svg
            uses_svg = "marker.svg" in (d / "style.xml").read_text(encoding="utf-8")
            (d / "style.xml").write_text(_style(svg=not uses_svg), encoding="utf-8")
        else:  # edit the SVG (used by the style or not)
            colour = SVG_COLOURS[_pick(u, len(SVG_COLOURS))]
            (d / "marker.svg").write_text(_svg(colour, 6 + 14 * abs(a)), encoding="utf-8")
        return None
    lyr = layers[name]
    rows = lyr.rows
    n = len(rows)
    if kind == "add":
        label = NAMES[_pick(abs(b), len(NAMES))]
        rows.insert(_pick(u, n + 1), (_new_geometry(name, u, v, a, b), lyr.new_attrs(label)))
    elif kind == "rewrite":
        pass
    elif n == 0:
        return None
    elif kind == "duplicate":  # an identical copy, somewhere in the order
        rows.insert(_pick(v, n + 1), rows[_pick(u, n)])
    elif kind == "delete":
        del rows[_pick(u, n)]
    elif kind == "move":
        i, dist = _pick(u, n), (5000 if v < 0.5 else 60)
        rows[i] = (shapely.affinity.translate(rows[i][0], a * dist, b * dist), rows[i][1])
    elif kind == "reshape":
        i = _pick(u, n)
        rows[i] = (_reshape(rows[i][0], u, v, a, b), rows[i][1])
    elif kind == "label":
        i = _pick(u, n)
        rows[i] = (rows[i][0], {**rows[i][1], USED[name]: NAMES[_pick(v, len(NAMES))]})
    elif kind == "unused":
        f = UNUSED[name]
        value = (1800 + _pick(v, 200)) if lyr.dtypes[f].kind != "O" else f"edited {_pick(v, 99)}"
        targets = range(n) if a > 0 else [_pick(u, n)]
        for i in targets:
            rows[i] = (rows[i][0], {**rows[i][1], f: value})
    elif kind == "reverse":
        rows.reverse()
    elif kind == "rotate":
        k = 1 + _pick(u, max(n - 1, 1))
        rows[:] = rows[k:] + rows[:k]
    elif kind == "swap":
        i = _pick(u, n)
        j = _overlapping(rows, i, v)
        rows[i], rows[j] = rows[j], rows[i]
    elif kind == "cut_paste":  # delete a row and append the same feature at the end
        rows.append(rows.pop(_pick(u, n)))
    else:  # pragma: no cover - a kind without an implementation
        raise AssertionError(kind)
    return name


def apply_step(d: Path, edits: Iterable[tuple]) -> None:
    layers = {name: Layer(d, name) for name in LAYERS}
    touched = set()
    for edit in edits:
        name = apply_edit(d, layers, edit)
        if name:
            touched.add(name)
    for name in sorted(touched):
        layers[name].write()


def update_and_check(d: Path, edits: list[tuple], old: Drawn) -> tuple[dict, Drawn]:
    """One step: apply ``edits``, update, check the update (:func:`check_update`)."""
    style = _style_inputs(d)
    apply_step(d, edits)
    return check_update(d, f"step {edits}", old, style)


def run_steps(d: Path, steps: list[list[tuple]]) -> None:
    """Each step, then the cache against a fresh seed (after every step: a later step
    re-rendering the same meta-tiles would hide an earlier step's stale tile)."""
    drawn = _drawn(d)
    for edits in steps:
        _result, drawn = update_and_check(d, edits, drawn)
        assert_equals_fresh_seed(d, drawn)


# --- strategies --------------------------------------------------------------------------------

unit = st.floats(0, 1, allow_nan=False)
signed = st.floats(-1, 1, allow_nan=False)
KINDS = {
    "add": LAYERS,
    "duplicate": LAYERS,
    "delete": LAYERS,
    "move": LAYERS,
    "reshape": LAYERS,
    "label": ("parcels", "roads", "pois"),
    "unused": LAYERS,
    "reverse": LAYERS,
    "rotate": LAYERS,
    "swap": LAYERS,
    "cut_paste": LAYERS,
    "rewrite": LAYERS,
    "crs": LAYERS,
    "svg": ("pois",),
}


def _edits(kinds: dict[str, tuple[str, ...]]) -> st.SearchStrategy:
    return st.sampled_from(tuple(kinds)).flatmap(
        lambda kind: st.tuples(
            st.just(kind), st.sampled_from(kinds[kind]), unit, unit, signed, signed
        )
    )


steps_st = st.lists(st.lists(_edits(KINDS), min_size=1, max_size=3), min_size=2, max_size=3)

HYPO = settings(
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _copy(base: Path, tmp: str) -> Path:
    return copy_project(base, Path(tmp) / base.name, with_state=True)


# --- 1. random edit sequences, compact cache -----------------------------------------------------


@HYPO
@given(steps=steps_st)
def test_compact_updates_equal_fresh_seed(compact_base, steps):
    with tempfile.TemporaryDirectory(prefix="eq-c-") as tmp:
        run_steps(_copy(compact_base, tmp), steps)


# --- 2. the same on an MBTiles cache (tiles and the metadata table) -----------------------------


@HYPO
@given(steps=steps_st)
def test_mbtiles_updates_equal_fresh_seed(mbtiles_base, steps):
    with tempfile.TemporaryDirectory(prefix="eq-m-") as tmp:
        run_steps(_copy(mbtiles_base, tmp), steps)


# --- 3. edits that change no picture render nothing ---------------------------------------------

NOOP_KINDS = {
    "rewrite": LAYERS,  # the same rows in the same order
    "unused": LAYERS,  # an attribute the style never reads
    "cut_last": LAYERS,  # cut the last row and paste it back at the end
    "svg_unused": ("pois",),  # edit marker.svg while the style does not use it
    "prj_ignored": tuple(n for n in LAYERS if LAYER_SRS[n]),  # the <Layer srs> wins
}


def _real_edit(kind: str, name: str, u: float, v: float, a: float, b: float) -> tuple:
    if kind == "cut_last":
        return ("cut_paste", name, 1.0, v, a, b)
    if kind == "svg_unused":
        return ("svg", name, u, 1.0, a, b)
    if kind == "prj_ignored":
        return ("crs", name, u, v, a, b)
    return (kind, name, u, v, a, b)


@pytest.fixture(scope="module")
def compact_base_cache(compact_base) -> tuple[dict, dict]:
    return _tiles(compact_base), _metadata(compact_base)


@HYPO
@given(steps=st.lists(st.lists(_edits(NOOP_KINDS), min_size=1, max_size=3), min_size=1, max_size=3))
def test_picture_preserving_edits_render_nothing(compact_base, compact_base_cache, steps):
    with tempfile.TemporaryDirectory(prefix="eq-n-") as tmp:
        d = _copy(compact_base, tmp)
        drawn = _drawn(d)
        for edits in steps:
            result, drawn = update_and_check(d, [_real_edit(*e) for e in edits], drawn)
            assert result["kind"] == "update"
            assert result["metatiles_rendered"] == 0, result
            assert result["tiles_written"] == result["tiles_removed"] == 0, result
        # The data draws as the seeded data did: the cache is that seed's, metadata included.
        assert (_tiles(d), _metadata(d)) == compact_base_cache


# --- 4. swapping two overlapping features renders only where both are drawn ----------------------

DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))


def _pair(layer: str, x: float, y: float, size: float, fx: float, fy: float):
    """Two different, overlapping features of ``layer`` near (x, y)."""
    sx = math.copysign(0.15 + 0.5 * abs(fx), fx)
    sy = math.copysign(0.15 + 0.5 * abs(fy), fy)
    if layer == "pois":
        return Point(x, y), Point(x + 20 * sx, y + 20 * sy)
    if layer == "roads":  # crossing
        half = 50 + 200 * size
        return (
            LineString([(x - half, y), (x + half, y)]),
            LineString([(x + half * sx, y - half), (x + half * sx, y + half)]),
        )
    w = 20 + 300 * size
    first = box(x, y, x + w, y + 0.7 * w)
    return first, shapely.affinity.translate(first, w * sx, 0.7 * w * sy)


@HYPO
@given(
    layer=st.sampled_from(LAYERS),
    dist=st.floats(15_000, 40_000),
    direction=st.sampled_from(DIRECTIONS),
    size=unit,
    fx=signed,
    fy=signed,
    pos=st.tuples(unit, unit),
)
def test_swapping_an_isolated_pair_renders_less_than_a_reversal(
    compact_base, layer, dist, direction, size, fx, fy, pos
):
    with tempfile.TemporaryDirectory(prefix="eq-s-") as tmp:
        d = _copy(compact_base, tmp)
        old, style = _drawn(d), _style_inputs(d)
        x, y = TOWN_X + direction[0] * dist, TOWN_Y + direction[1] * dist
        first, second = _pair(layer, x, y, size, fx, fy)
        lyr = Layer(d, layer)
        lyr.rows.insert(_pick(pos[0], len(lyr.rows) + 1), (first, lyr.new_attrs("Pair A")))
        lyr.rows.insert(_pick(pos[1], len(lyr.rows) + 1), (second, lyr.new_attrs("Pair B")))
        i, j = (k for k, r in enumerate(lyr.rows) if r[0] is first or r[0] is second)
        lyr.write()
        _result, drawn = check_update(d, f"add a pair to {layer} at rows {i}, {j}", old, style)

        # The pair shares no meta-tile with any other feature, at any level; with each
        # other, at least one per level (they overlap).
        pair = {(layer, drawn.layers[layer][i][0]), (layer, drawn.layers[layer][j][0])}
        shared = 0
        for lv in LEVEL_LIST:
            a, b = _reach(drawn.layers[layer][i][1], lv), _reach(drawn.layers[layer][j][1], lv)
            others = {m for m, seq in drawn.sequences(lv).items() if set(seq) - pair}
            assert not (a | b) & others, f"level {lv}: the pair is not isolated"
            assert a & b, f"level {lv}: the pair shares no meta-tile"
            shared += len(a & b)

        swapped = copy_project(d, Path(tmp) / "swapped" / d.name, with_state=True)
        lyr = Layer(swapped, layer)
        lyr.rows[i], lyr.rows[j] = lyr.rows[j], lyr.rows[i]
        lyr.write()
        by_swap, after = check_update(swapped, f"swap rows {i} and {j}", drawn, style)
        assert by_swap["metatiles_rendered"] == shared
        assert_equals_fresh_seed(swapped, after)

        reversed_ = copy_project(d, Path(tmp) / "reversed" / d.name, with_state=True)
        lyr = Layer(reversed_, layer)
        lyr.rows.reverse()
        lyr.write()
        by_reversal, after = check_update(reversed_, f"reverse {layer}", drawn, style)
        assert by_swap["metatiles_rendered"] < by_reversal["metatiles_rendered"]
        assert_equals_fresh_seed(reversed_, after)
