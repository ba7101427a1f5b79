"""Regression tests for holes in change detection: each follows a real user action, runs
``update`` and checks the promise: the cache equals a fresh seed, tile for tile (and its
metadata), and an update never does nothing while tiles are stale.

1. draw order (rows swapped), 2. CRS (.prj fixed, layer srs changed), 3. files the style
uses (pattern, marker, font folder), 4. scale bounds within Mapnik's tolerance,
5. metadata after the extent grows and shrinks, 6. duplicate key values,
7. fields Mapnik reads outside rules (``group-by``).
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import pytest
import shapely
import shapely.affinity
from PIL import Image
from shapely.geometry import box
from test_update import assert_cache_equals_fresh_seed, copy_project, make_sample, read_cache

from tiledelta import api, sample
from tiledelta.api import seed, update
from tiledelta.change import detect_changes
from tiledelta.grid import mapnik_scale_denominator, metatile_bounds, metatiles_for_boxes, query_pad
from tiledelta.plan import update_plan, visible_levels
from tiledelta.project import Project
from tiledelta.render._mapnik import mapnik
from tiledelta.sample import _read, _write
from tiledelta.sources import read_layers
from tiledelta.style import load_style

LEVELS = "15-16"
TOWN_CX = sample.X0 + sample.NX * (sample.BLOCK + sample.STREET) / 2
TOWN_CY = sample.Y0 + sample.NY * (sample.BLOCK + sample.STREET) / 2
RES0 = 156543.033928  # Web Mercator resolution at level 0, as Mapnik's users write it
MAPNIK_PIXEL = 0.00028  # metres: Mapnik's standardized rendering pixel
WORLD_BOUNDS = "-180.0,-85.0511287798066,180.0,85.0511287798066"
_BUILDINGS_STYLE = re.compile(r'  <Style name="buildings">.*?</Style>\n', re.S)
_BUILDINGS_LAYER = re.compile(r'  <Layer name="buildings".*?</Layer>\n', re.S)


# --- helpers -------------------------------------------------------------------------------


def _restyle(folder: Path, styles: str, layer: str | None = None) -> None:
    """Replace the sample's buildings <Style> (and optionally its <Layer>) in style.xml."""
    path = folder / "style.xml"
    text = _BUILDINGS_STYLE.sub(lambda _m: styles, path.read_text(encoding="utf-8"), count=1)
    if layer is not None:
        text = _BUILDINGS_LAYER.sub(lambda _m: layer, text, count=1)
    path.write_text(text, encoding="utf-8")


def _new_project(
    folder: Path,
    *,
    style: Callable[[Path], None] | None = None,
    data: Callable[[Project], None] | None = None,
    cache_kind: str = "compact",
    levels: str = LEVELS,
) -> Path:
    """The sample county, restyled / edited by the callbacks, then seeded (1 process)."""
    sample.generate(folder)
    if style is not None:
        style(folder)
    api.init_project(
        folder, style=folder / "style.xml", levels=levels, cache_kind=cache_kind, force=True
    )
    Project.load(folder).updated(render={"processes": 1}).save()
    if data is not None:
        data(api.load_project(folder))
    seed(api.load_project(folder), notify=False)
    return folder


def _update(folder: Path) -> dict:
    return update(api.load_project(folder), notify=False)


def _gpkg(folder: Path) -> Path:
    return folder / "data" / "county.gpkg"


def _append_buildings(gpkg: Path, rows: list[tuple[shapely.Geometry, str]]) -> list[int]:
    """Append buildings (geometry, kind) to the sample; return their row numbers."""
    geoms, f = _read(gpkg, "buildings")
    first = len(geoms)
    for geom, kind in rows:
        geoms.append(geom)
        f["kind"].append(kind)
        f["year_built"].append(2000)
        if "bid" in f:
            f["bid"].append(max(f["bid"]) + 1)
    _write(gpkg, "buildings", geoms, f, "Polygon")
    return list(range(first, first + len(rows)))


def _rewrite_rows(gpkg: Path, rows: list[int]) -> None:
    """Rewrite the buildings layer with the given rows, in that order."""
    geoms, f = _read(gpkg, "buildings")
    fields = {k: [v[i] for i in rows] for k, v in f.items()}
    _write(gpkg, "buildings", [geoms[i] for i in rows], fields, "Polygon")


def _reach(project: Project, level: int, geom: shapely.Geometry) -> set[tuple[int, int]]:
    """The meta-tiles of ``level`` whose buffered extent a feature's box meets."""
    s = project.settings
    pad = query_pad(project.scheme, level, s.buffer)
    got = metatiles_for_boxes(project.scheme, level, np.array([geom.bounds]), pad, s.metatile)
    return {(int(r), int(c)) for r, c in got.tolist()}


def _tiles_of(metatiles: dict[int, set[tuple[int, int]]], meta: int) -> set[tuple[int, int, int]]:
    return {
        (lv, r * meta + j, c * meta + i)
        for lv, mts in metatiles.items()
        for r, c in mts
        for j in range(meta)
        for i in range(meta)
    }


def _changed(before: dict, after: dict) -> set:
    return {a for a in before.keys() | after.keys() if before.get(a) != after.get(a)}


# --- 1. draw order ---------------------------------------------------------------------------


def test_swapped_rows_rerender_only_metatiles_drawing_both(tmp_path):
    """Two overlapping buildings of different colours swap rows: the overlap is drawn the
    other way round, so the meta-tiles that draw both change, and only those are rendered.
    Reloading the same rows in the same order afterwards renders nothing."""
    pair: dict[str, shapely.Geometry] = {}

    def add_pair(project: Project) -> None:
        # A crosses a level-15 meta-tile edge (also a level-16 edge); B lies east of it,
        # farther than the buffer, so B's meta-tiles are a strict subset of A's.
        b15 = metatile_bounds(project.scheme, 15, 0, 0, project.settings.metatile)
        width = b15.xmax - b15.xmin
        col = round((TOWN_CX - project.scheme.origin_x) / width)
        edge = project.scheme.origin_x + col * width
        pair["A"] = box(edge - 120, TOWN_CY, edge + 400, TOWN_CY + 40)
        pair["B"] = box(edge + 340, TOWN_CY + 20, edge + 380, TOWN_CY + 60)
        _append_buildings(
            _gpkg(project.root), [(pair["A"], "commercial"), (pair["B"], "residential")]
        )

    d = _new_project(tmp_path / "county", data=add_pair)
    gpkg = _gpkg(d)
    geoms, f = _read(gpkg, "buildings")
    n = len(geoms)
    assert geoms[n - 2].equals(pair["A"]) and geoms[n - 1].equals(pair["B"])
    _rewrite_rows(gpkg, list(range(n - 2)) + [n - 1, n - 2])

    project = api.load_project(d)
    layers = read_layers(project)
    changes = detect_changes(project, layers)
    ch = changes.layers["buildings"]
    assert (ch.added, ch.modified, ch.deleted) == (0, 0, 0)
    assert ch.reordered == 1 and changes.any
    plan = update_plan(project, changes, layers)
    planned = {lv: {(int(r), int(c)) for r, c in mts.tolist()} for lv, mts in plan.levels.items()}
    want = {}
    for level in project.levels:
        a, b = _reach(project, level, pair["A"]), _reach(project, level, pair["B"])
        assert a & b and a & b < a | b, f"level {level}: the scenario must be partial"
        want[level] = a & b
    assert planned == want

    before = read_cache(d)
    result = _update(d)
    assert result["kind"] == "update"
    assert result["changes"]["layers"]["buildings"].get("reordered") == 1
    assert result["metatiles_rendered"] == sum(len(m) for m in want.values())
    after = read_cache(d)
    changed = _changed(before, after)
    assert changed, "the swap changes the overlap; some tile must change"
    assert changed <= _tiles_of(want, project.settings.metatile)
    assert_cache_equals_fresh_seed(d)

    # A reload of the same rows in the same order (truncate and append) renders nothing.
    geoms, f = _read(gpkg, "buildings")
    _write(gpkg, "buildings", geoms, f, "Polygon")
    assert not detect_changes(api.load_project(d)).any
    result = _update(d)
    assert result["metatiles_rendered"] == 0 and result["tiles_written"] == 0
    assert read_cache(d) == after
    assert_cache_equals_fresh_seed(d)


# --- 2. CRS ------------------------------------------------------------------------------------

SHAPE_BUILDINGS = """  <Layer name="buildings">
    <StyleName>buildings</StyleName>
    <Datasource>
      <Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/buildings.shp</Parameter>
    </Datasource>
  </Layer>
"""


def _to_shapefile(folder: Path, layer: str, crs: str | None) -> Path:
    meta, _fids, geoms, values = pyogrio.raw.read(str(_gpkg(folder)), layer=layer)
    out = folder / "shp" / f"{layer}.shp"
    out.parent.mkdir(exist_ok=True)
    pyogrio.raw.write(
        str(out),
        geoms,
        list(values),
        fields=meta["fields"],
        geometry_type=meta["geometry_type"],
        crs=crs or "EPSG:3857",
        driver="ESRI Shapefile",
    )
    if crs is None:
        out.with_suffix(".prj").unlink()
    return out


def test_fixed_prj_moves_every_feature(tmp_path):
    """The buildings shapefile's .prj said EPSG:3857; the user fixes it to EPSG:3395 (same
    coordinates): every building moves (about 31 km north), so update re-renders."""

    def shapefile_layer(folder: Path) -> None:
        _to_shapefile(folder, "buildings", "EPSG:3857")
        _restyle(folder, _BUILDINGS_STYLE.search(sample.STYLE).group(0), SHAPE_BUILDINGS)

    d = _new_project(tmp_path / "county", style=shapefile_layer)
    old = read_layers(api.load_project(d))["buildings"]
    prj = d / "shp" / "buildings.prj"
    prj.write_text(pyproj.CRS("EPSG:3395").to_wkt("WKT1_ESRI"), encoding="utf-8")

    project = api.load_project(d)
    new = read_layers(project)["buildings"]
    assert len(new) == len(old) and not np.isclose(new.bounds, old.bounds).all(axis=1).any()
    assert new.bounds[:, 1].min() - old.bounds[:, 1].min() > 30_000  # moved north
    changes = detect_changes(project)
    assert changes.rebuild is None
    ch = changes.layers["buildings"]
    assert (ch.added, ch.deleted) == (len(old), len(old)), ch.as_dict()
    before = read_cache(d)
    result = _update(d)
    assert result["kind"] == "update" and result["metatiles_rendered"] > 0
    assert result["changes"]["layers"]["buildings"]["added"] == len(old)
    assert read_cache(d) != before
    assert_cache_equals_fresh_seed(d)
    assert not detect_changes(api.load_project(d)).any


def test_changed_layer_srs_without_prj(tmp_path):
    """A shapefile without .prj takes the <Layer srs=...>; the user corrects that srs."""

    def shapefile_layer(folder: Path) -> None:
        _to_shapefile(folder, "buildings", None)
        layer = SHAPE_BUILDINGS.replace('name="buildings">', 'name="buildings" srs="epsg:3857">')
        _restyle(folder, _BUILDINGS_STYLE.search(sample.STYLE).group(0), layer)

    d = _new_project(tmp_path / "county", style=shapefile_layer)
    assert not (d / "shp" / "buildings.prj").exists()
    style = d / "style.xml"
    text = style.read_text(encoding="utf-8")
    assert text.count('<Layer name="buildings" srs="epsg:3857">') == 1
    text = text.replace('name="buildings" srs="epsg:3857"', 'name="buildings" srs="epsg:3395"')
    style.write_text(text, encoding="utf-8")
    project = api.load_project(d)
    assert project.style.layer("buildings").srs == "epsg:3395"
    assert detect_changes(project).any
    before = read_cache(d)
    result = _update(d)
    assert result["metatiles_rendered"] > 0
    assert read_cache(d) != before
    assert_cache_equals_fresh_seed(d)
    assert not detect_changes(api.load_project(d)).any


# --- 3. files the style uses ---------------------------------------------------------------------

SYMBOL_STYLE = """  <Style name="buildings">
    <Rule>
      <PolygonPatternSymbolizer file="hatch.png"/>
      <MarkersSymbolizer file="pin.svg" width="12" height="12" allow-overlap="true"/>
    </Rule>
  </Style>
"""
PIN_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="12" height="12">
  <circle cx="6" cy="6" r="5" fill="{fill}" stroke="#000000" stroke-width="1"/>
</svg>
"""


def _hatch(path: Path, colour: tuple[int, int, int, int]) -> None:
    im = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    for i in range(8):
        im.putpixel((i, i), colour)
        im.putpixel((i, 7 - i), colour)
    im.save(path, format="PNG")


def _status(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "status", "--project", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_edited_symbol_files_rebuild(tmp_path):
    """Editing only hatch.png (a pattern) or pin.svg (a marker) changes the picture:
    status says a rebuild is needed, and update gives a fresh seed's cache."""

    def symbols(folder: Path) -> None:
        _restyle(folder, SYMBOL_STYLE)
        _hatch(folder / "hatch.png", (180, 60, 40, 255))
        (folder / "pin.svg").write_text(PIN_SVG.format(fill="#d95f02"), encoding="utf-8")

    d = _new_project(tmp_path / "county", style=symbols)
    style = load_style(d / "style.xml")
    assert {str((d / n).resolve()) for n in ("hatch.png", "pin.svg")} <= set(style.files)

    edits = (
        lambda: _hatch(d / "hatch.png", (40, 60, 180, 255)),
        lambda: (d / "pin.svg").write_text(PIN_SVG.format(fill="#1b9e77"), encoding="utf-8"),
    )
    for edit in edits:
        text_before = (d / "style.xml").read_bytes()
        edit()
        assert (d / "style.xml").read_bytes() == text_before  # the style file is untouched
        why = api.changes_summary(api.load_project(d))["rebuild"]
        assert why and "a file it uses" in why
        proc = _status(d)
        assert proc.returncode == 0, proc.stderr
        assert "full rebuild needed" in proc.stdout and "a file it uses" in proc.stdout
        before = read_cache(d)
        result = _update(d)
        assert result["kind"] == "rebuild" and "a file it uses" in result["rebuild"]
        assert result["metatiles_rendered"] > 0
        assert read_cache(d) != before, "the edited file is drawn: tiles must change"
        assert_cache_equals_fresh_seed(d)
        assert not detect_changes(api.load_project(d)).any


FONTS = Path("/usr/share/fonts/truetype/dejavu")


@pytest.mark.skipif(
    not (FONTS / "DejaVuSerif.ttf").is_file() or not (FONTS / "DejaVuSerif-Bold.ttf").is_file(),
    reason=f"DejaVu Serif fonts not found in {FONTS}",
)
def test_font_directory_files_are_in_the_digest(tmp_path):
    """A font added to (or removed from) <Map font-directory> changes the style digest, and
    status asks for a rebuild. (Mapnik refuses a font-directory without fonts, so the
    folder starts with one.)"""

    def font_dir(folder: Path) -> None:
        (folder / "fonts").mkdir()
        shutil.copyfile(FONTS / "DejaVuSerif.ttf", folder / "fonts" / "DejaVuSerif.ttf")
        path = folder / "style.xml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("<Map ", '<Map font-directory="fonts" ', 1), encoding="utf-8")

    d = _new_project(tmp_path / "county", style=font_dir)
    one = load_style(d / "style.xml")
    assert str((d / "fonts" / "DejaVuSerif.ttf").resolve()) in one.files
    assert not detect_changes(api.load_project(d)).any

    added = d / "fonts" / "DejaVuSerif-Bold.ttf"
    shutil.copyfile(FONTS / "DejaVuSerif-Bold.ttf", added)
    two = load_style(d / "style.xml")
    assert two.digest != one.digest and str(added.resolve()) in two.files
    why = api.changes_summary(api.load_project(d))["rebuild"]
    assert why and "a file it uses" in why
    proc = _status(d)
    assert proc.returncode == 0 and "full rebuild needed" in proc.stdout, proc.stderr
    result = _update(d)
    assert result["kind"] == "rebuild" and result["metatiles_rendered"] > 0
    assert_cache_equals_fresh_seed(d)
    assert not detect_changes(api.load_project(d)).any

    added.unlink()  # removed again: back to the first digest, and a rebuild is due
    assert load_style(d / "style.xml").digest == one.digest
    why = api.changes_summary(api.load_project(d))["rebuild"]
    assert why and "a file it uses" in why
    nested = d / "fonts" / "more" / "DejaVuSerif-Bold.ttf"
    nested.parent.mkdir()
    shutil.copyfile(FONTS / "DejaVuSerif-Bold.ttf", nested)
    assert load_style(d / "style.xml").digest not in (one.digest, two.digest)  # nested count


# --- 4. scale bounds within Mapnik's tolerance --------------------------------------------------


def _edge_style(max_sd: float) -> str:
    return f"""  <Style name="buildings">
    <Rule>
      <MaxScaleDenominator>{max_sd!r}</MaxScaleDenominator>
      <PolygonSymbolizer fill="#b05030"/>
    </Rule>
  </Style>
"""


def _mapnik_rule_active(style_xml: str, level: int, project: Project) -> bool:
    """Mapnik's own verdict for the buildings rule at ``level``, with Mapnik's own scale."""
    meta = project.settings.metatile
    m = mapnik.Map(meta * 256, meta * 256)
    mapnik.load_map_from_string(m, style_xml)
    b = metatile_bounds(project.scheme, level, 700, 650, meta)
    m.zoom_to_box(mapnik.Box2d(b.xmin, b.ymin, b.xmax, b.ymax))
    sd = RES0 / 2**level / MAPNIK_PIXEL
    assert abs(m.scale_denominator() - sd) < 1e-7  # Mapnik draws the level at this scale
    assert abs(mapnik_scale_denominator(project.scheme, level) - sd) < 1e-7
    rule = m.find_style("buildings").rules[0]
    return bool(rule.active(sd)) and bool(rule.active(m.scale_denominator()))


def test_rule_bound_just_below_the_level_scale_is_drawn(tmp_path):
    """MaxScaleDenominator = sd(16) - 5e-7: Mapnik draws the rule at level 16 (it tests
    sd < max + 1e-6), so an edit of a building drawn only by it re-renders level 16."""
    sd16 = RES0 / 2**16 / MAPNIK_PIXEL
    d = _new_project(tmp_path / "county", style=lambda f: _restyle(f, _edge_style(sd16 - 5e-7)))
    project = api.load_project(d)
    assert _mapnik_rule_active(project.style.xml_without_datasources, 16, project)
    assert not _mapnik_rule_active(project.style.xml_without_datasources, 15, project)
    assert visible_levels(project.style, project.scheme, project.levels)["buildings"] == [16]

    geoms, f = _read(_gpkg(d), "buildings")
    geoms[100] = shapely.affinity.translate(geoms[100], 40, 25)
    _write(_gpkg(d), "buildings", geoms, f, "Polygon")
    before = read_cache(d)
    result = _update(d)
    assert result["metatiles_rendered"] > 0
    assert result["levels"]["16"]["tiles"] > 0
    assert result["levels"]["15"]["tiles"] == 0  # buildings are not drawn at level 15
    changed = _changed(before, read_cache(d))
    assert changed and {lv for lv, _r, _c in changed} == {16}
    assert_cache_equals_fresh_seed(d)


def test_rule_bound_beyond_the_tolerance_is_not_planned(tmp_path):
    """MaxScaleDenominator = sd(16) - 2e-6: Mapnik does not draw the rule at level 16, so
    the layer has no level to plan."""
    sd16 = RES0 / 2**16 / MAPNIK_PIXEL
    folder = tmp_path / "county"
    sample.generate(folder)
    _restyle(folder, _edge_style(sd16 - 2e-6))
    api.init_project(folder, style=folder / "style.xml", levels=LEVELS, force=True)
    project = api.load_project(folder)
    assert not _mapnik_rule_active(project.style.xml_without_datasources, 16, project)
    vis = visible_levels(project.style, project.scheme, project.levels)
    assert vis["buildings"] == []
    assert vis["roads"] == [15, 16]  # the other layers are untouched


# --- 5. metadata after the extent grows and shrinks ---------------------------------------------


def _metadata(folder: Path) -> dict:
    project = api.load_project(folder)
    path = project.cache_path
    if project.config.cache.kind == "compact":
        return {name: (path / name).read_bytes() for name in ("conf.cdi", "conf.xml")}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT name, value FROM metadata").fetchall())
    finally:
        con.close()


def _fresh_seed_metadata(folder: Path, tmp: Path) -> dict:
    """A fresh seed's metadata, from a copy in a folder of the same name (the name is
    metadata too)."""
    fresh = copy_project(folder, tmp / folder.name, with_state=False)
    seed(api.load_project(fresh), notify=False)
    out = _metadata(fresh)
    shutil.rmtree(tmp)
    return out


def _wgs84(b: tuple[float, float, float, float]) -> tuple[float, ...]:
    t = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    (w, e), (s, n) = t.transform([b[0], b[2]], [b[1], b[3]])
    return (w, s, e, n)


@pytest.mark.parametrize("kind", ["compact", "mbtiles"])
def test_metadata_follows_the_extent(tmp_path, kind):
    d = _new_project(tmp_path / "county", cache_kind=kind)
    town = read_layers(api.load_project(d))
    far = box(sample.X0 + 9000, sample.Y0 + 6000, sample.X0 + 9040, sample.Y0 + 6030)
    gpkg = _gpkg(d)
    seeded = _metadata(d)

    steps = ("grow", "shrink")
    for step in steps:
        geoms, f = _read(gpkg, "buildings")
        if step == "grow":
            _append_buildings(gpkg, [(far, "commercial")])
        else:
            _rewrite_rows(gpkg, [k for k, g in enumerate(geoms) if not g.equals(far)])
        result = _update(d)
        assert result["kind"] == "update" and result["metatiles_rendered"] > 0, step
        got = _metadata(d)
        want = _fresh_seed_metadata(d, tmp_path / f"fresh-{step}")
        assert got == want, f"{kind} metadata after {step} differs from a fresh seed"
        assert (got != seeded) == (step == "grow"), step
        assert_cache_equals_fresh_seed(d)
        if kind == "mbtiles":
            assert got["name"] == "county" and got["bounds"] != WORLD_BOUNDS
            assert (got["minzoom"], got["maxzoom"]) == ("15", "16")
            west, south, east, north = (float(v) for v in got["bounds"].split(","))
            xs = np.concatenate([lyr.bounds for lyr in town.values()])
            lo = _wgs84((xs[:, 0].min(), xs[:, 1].min(), xs[:, 2].max(), xs[:, 3].max()))
            assert abs(west - lo[0]) < 1e-5 and abs(south - lo[1]) < 1e-5
            if step == "grow":
                assert abs(east - _wgs84(far.bounds)[2]) < 1e-5
                assert abs(north - _wgs84(far.bounds)[3]) < 1e-5
            else:
                assert abs(east - lo[2]) < 1e-5 and abs(north - lo[3]) < 1e-5
            cx, cy, cz = got["center"].split(",")
            assert abs(float(cx) - (west + east) / 2) < 1e-6 and cz == "15"


# --- 6. duplicate key values ----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _key_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "key values repeat" in r.getMessage()
    ]


def test_duplicate_keys_warn_and_do_not_wedge(tmp_path, caplog):
    """With key = "bid", two buildings get the same bid (one of them also moved), then both
    rows are deleted. Every run succeeds with a warning naming the layer; the snapshot
    holding the duplicate keys does not wedge status or update."""
    d = make_sample(tmp_path / "county", keyed=True, levels=LEVELS)
    assert api.load_project(d).key_field("buildings") == "bid"
    gpkg = _gpkg(d)
    geoms, f = _read(gpkg, "buildings")
    f["bid"][1] = f["bid"][0]
    geoms[1] = shapely.affinity.translate(geoms[1], 30, -20)
    _write(gpkg, "buildings", geoms, f, "Polygon")

    caplog.set_level(logging.WARNING, logger="tiledelta")
    result = _update(d)
    warned = _key_warnings(caplog)
    assert warned and all("'buildings'" in w for w in warned), warned
    assert result["kind"] == "update" and result["metatiles_rendered"] > 0
    c = result["changes"]["layers"]["buildings"]
    assert (c["added"], c["deleted"]) == (1, 1), c
    assert_cache_equals_fresh_seed(d)

    # The snapshot now holds the duplicate keys: status and a no-op update still work.
    caplog.clear()
    assert not api.changes_summary(api.load_project(d))["rebuild"]
    assert not detect_changes(api.load_project(d)).any
    proc = _cli("status", "--project", str(d))
    assert proc.returncode == 0, proc.stderr
    assert "buildings: 0 added, 0 modified, 0 deleted" in proc.stdout
    result = _update(d)
    assert result["metatiles_rendered"] == 0
    assert _key_warnings(caplog)

    # Delete both rows: the snapshot's keys repeat, the data's do not.
    _rewrite_rows(gpkg, list(range(2, len(geoms))))
    caplog.clear()
    c = api.changes_summary(api.load_project(d))["layers"]["buildings"]
    assert (c["added"], c["modified"], c["deleted"]) == (0, 0, 2), c
    assert any("'buildings'" in w for w in _key_warnings(caplog))
    proc = _cli("update", "--project", str(d))
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "'buildings'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "buildings: 0 added, 0 modified, 2 deleted" in proc.stdout, proc.stdout
    assert_cache_equals_fresh_seed(d)

    # Keys are unique on both sides again: no warning, nothing to do.
    caplog.clear()
    result = _update(d)
    assert result["metatiles_rendered"] == 0
    assert not _key_warnings(caplog)
    proc = _cli("status", "--project", str(d))
    assert proc.returncode == 0 and "0 deleted" in proc.stdout, proc.stderr


# --- 7. fields Mapnik reads outside rules ------------------------------------------------------

GROUPED_STYLES = """  <Style name="building-fill">
    <Rule><PolygonSymbolizer fill="#cfc6bd"/></Rule>
  </Style>
  <Style name="building-outline">
    <Rule><LineSymbolizer stroke="#402010" stroke-width="3"/></Rule>
  </Style>
"""
GROUPED_LAYER = """  <Layer name="buildings" srs="epsg:3857" group-by="kind">
    <StyleName>building-fill</StyleName>
    <StyleName>building-outline</StyleName>
    <Datasource>
      <Parameter name="type">ogr</Parameter>
      <Parameter name="file">data/county.gpkg</Parameter>
      <Parameter name="layer">buildings</Parameter>
    </Datasource>
  </Layer>
"""


def test_group_by_field_edit_rerenders(tmp_path):
    """group-by="kind" makes Mapnik draw both styles group by group (runs of equal kind):
    two overlapping buildings of one kind get their outlines drawn over both fills; give
    one another kind and its fill covers the other's outline. No rule mentions kind."""
    pair: dict[str, shapely.Geometry] = {}

    def add_pair(project: Project) -> None:
        pair["A"] = box(TOWN_CX, TOWN_CY, TOWN_CX + 60, TOWN_CY + 40)
        pair["B"] = box(TOWN_CX + 30, TOWN_CY + 20, TOWN_CX + 90, TOWN_CY + 60)
        rows = [(pair["A"], "residential"), (pair["B"], "residential")]
        _append_buildings(_gpkg(project.root), rows)

    d = _new_project(
        tmp_path / "county",
        style=lambda f: _restyle(f, GROUPED_STYLES, GROUPED_LAYER),
        data=add_pair,
    )
    style = load_style(d / "style.xml")
    rules = re.findall(r"<Style .*?</Style>", style.xml_without_datasources, re.S)
    assert rules and "kind" not in "".join(rules)
    assert "kind" in style.layer("buildings").attributes

    gpkg = _gpkg(d)
    geoms, f = _read(gpkg, "buildings")
    assert geoms[-1].equals(pair["B"])
    f["kind"][-1] = "commercial"
    _write(gpkg, "buildings", geoms, f, "Polygon")
    project = api.load_project(d)
    ch = detect_changes(project).layers["buildings"]
    assert ch.changed and (ch.added, ch.deleted) == (1, 1), ch.as_dict()

    before = read_cache(d)
    result = _update(d)
    assert result["kind"] == "update" and result["metatiles_rendered"] > 0
    after = read_cache(d)
    changed = _changed(before, after)
    assert changed, "the group split changes the overlap; some tile must change"
    reach = {lv: _reach(project, lv, pair["B"]) for lv in project.levels}
    assert result["metatiles_rendered"] <= sum(len(m) for m in reach.values())
    assert changed <= _tiles_of(reach, project.settings.metatile)
    assert_cache_equals_fresh_seed(d)
