"""Drawing a layer's features in consecutive batches (what a Dask task does when it needs
more than ``[render] task_features``) gives the bytes of one Mapnik render of them all,
for the styles :func:`batch_unsafe` lets through; the styles it refuses really differ."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tiledelta import api, sample
from tiledelta.grid import metatiles_for_boxes
from tiledelta.render.dask_engine import LocalEngine
from tiledelta.render.renderer import Renderer, batch_unsafe
from tiledelta.sources import LayerData, chunked


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batches") / "county"
    sample.generate(root)
    api.init_project(root, style=root / "style.xml", levels="10-17", force=True)
    return root


def _with_style(county: Path, to: Path, edit) -> Path:
    dest = to / "county"
    shutil.copytree(county, dest)
    style = dest / "style.xml"
    style.write_text(edit(style.read_text()), encoding="utf-8")
    return dest


def _part(d: LayerData, a: int, b: int) -> LayerData:
    return dataclasses.replace(
        d,
        keys=d.keys[a:b],
        wkb=d.wkb[a:b],
        bounds=d.bounds[a:b],
        attrs={k: v[a:b] for k, v in d.attrs.items()},
        fingerprints=d.fingerprints[a:b],
    )


def _compare(root: Path, size: int) -> tuple[int, int]:
    """(equal, different) tiles: one render against batches of ``size`` features, over up
    to 12 meta-tiles at each level."""
    project = api.load_project(root)
    layers = LocalEngine().read_layers(project)
    batched = Renderer(project.style, project.scheme, {}, project.settings)
    boxes = np.concatenate([d.bounds for d in layers.values() if len(d)])
    same = differ = 0
    for level in range(10, 18):
        res = project.scheme.resolution(level)
        pad = project.settings.buffer * res
        metas = metatiles_for_boxes(project.scheme, level, boxes, pad, project.settings.metatile)
        metas = metas.tolist()[:: max(1, len(metas) // 12)][:12]
        whole = Renderer(project.style, project.scheme, layers, project.settings)
        want = [t for r, c in metas for t in whole.tiles(level, r, c)]
        passes = {
            n: [_part(d, a, a + size) for a in range(0, len(d), size)]
            for n, d in layers.items()
            if len(d)
        }
        got = batched.tiles_in_passes(level, [(r, c, None) for r, c in metas], passes)
        assert [t[:3] for t in got] == [t[:3] for t in want]
        for w, g in zip(want, got, strict=True):
            same += w[3] == g[3]
            differ += w[3] != g[3]
    return same, differ


def test_batches_draw_the_bytes_of_one_render(county):
    """Polygons, lines, points and labels (the sample county), in batches of 5 features."""
    assert batch_unsafe(api.load_project(county).style.xml_without_datasources) is None
    same, differ = _compare(county, 5)
    assert same > 200 and differ == 0


def test_meta_tiles_of_several_levels_drawn_from_one_set_of_batches(county):
    """A Dask task group: meta-tiles of levels 10-17 together, each batch drawn onto all of
    them (a batch holds features a meta-tile does not reach); the bytes of one render
    each, in the entries' order."""
    project = api.load_project(county)
    layers = LocalEngine().read_layers(project)
    boxes = np.concatenate([d.bounds for d in layers.values() if len(d)])
    entries, want = [], []
    whole = Renderer(project.style, project.scheme, layers, project.settings)
    for level in range(10, 18):
        pad = project.settings.buffer * project.scheme.resolution(level)
        metas = metatiles_for_boxes(project.scheme, level, boxes, pad, project.settings.metatile)
        for r, c in metas.tolist()[:2]:
            entries.append((level, r, c, None))
            want.append(whole.tiles(level, r, c))
    passes = {
        n: [_part(d, a, a + 7) for a in range(0, len(d), 7)] for n, d in layers.items() if len(d)
    }
    batched = Renderer(project.style, project.scheme, {}, project.settings)
    got = batched.metatiles_in_passes(entries, passes)
    assert len(got) == len(entries) >= 10
    assert got == want
    assert sum(1 for tiles in got for t in tiles if t[3] is not None) > 50


def test_batches_with_translucent_symbols_on_an_opaque_background(county, tmp_path):
    def translucent(xml: str) -> str:
        xml = xml.replace("<PolygonSymbolizer ", '<PolygonSymbolizer fill-opacity="0.5" ')
        return xml.replace("<LineSymbolizer ", '<LineSymbolizer stroke-opacity="0.6" ')

    root = _with_style(county, tmp_path, translucent)
    same, differ = _compare(root, 3)
    assert same > 200 and differ == 0


def test_a_transparent_background_is_refused_and_would_differ(county, tmp_path):
    """Mapnik demultiplies the image after a render; the next takes it as premultiplied."""

    def transparent(xml: str) -> str:
        xml = re.sub(r'(<Map[^>]*?) background-color="[^"]*"', r"\1", xml, count=1)
        return xml.replace("<PolygonSymbolizer ", '<PolygonSymbolizer fill-opacity="0.5" ')

    root = _with_style(county, tmp_path, transparent)
    xml = api.load_project(root).style.xml_without_datasources
    assert batch_unsafe(xml) == "the map has no opaque background-color"
    _same, differ = _compare(root, 3)
    assert differ > 0  # why it is refused


MAP = '<Map srs="epsg:3857" background-color="{bg}">{styles}{layers}</Map>'
STYLE = '<Style name="{name}"{attrs}><Rule><PolygonSymbolizer{sym}/></Rule></Style>'
LAYER = '<Layer name="{name}"{attrs}>{styles}</Layer>'


def _xml(bg="#ffffff", style_attrs="", sym="", layer_attrs="", styles=("a",)) -> str:
    st = "".join(STYLE.format(name=n, attrs=style_attrs, sym=sym) for n in ("a", "b"))
    names = "".join(f"<StyleName>{n}</StyleName>" for n in styles)
    return MAP.format(
        bg=bg, styles=st, layers=LAYER.format(name="l", attrs=layer_attrs, styles=names)
    )


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (_xml(), None),
        (_xml(layer_attrs=' opacity="1.0"'), None),
        (_xml(bg="rgba(255,255,255,0.5)"), "the map has no opaque background-color"),
        (_xml(bg=""), "the map has no opaque background-color"),
        (_xml(bg="no-such-colour"), "the map has no opaque background-color"),
        (_xml(style_attrs=' opacity="0.7"'), "style 'a' has opacity"),
        (_xml(style_attrs=' image-filters="blur"'), "style 'a' has image-filters"),
        (_xml(style_attrs=' comp-op="multiply"'), "<Style> has a comp-op"),
        (_xml(sym=' comp-op="dst-out"'), "<PolygonSymbolizer> has a comp-op"),
        (_xml(layer_attrs=' opacity="0.5"'), "layer 'l' has opacity"),
        (_xml(layer_attrs=' group-by="kind"'), "layer 'l' has group-by"),
        (_xml(layer_attrs=' clear-label-cache="true"'), "layer 'l' clears the label cache"),
        (_xml(styles=("a", "b")), "layer 'l' has 2 styles"),
    ],
)
def test_batch_unsafe_names_what_would_change_the_picture(xml, reason):
    assert batch_unsafe(xml) == reason


def test_a_reading_task_in_parts_equals_one_read(county, monkeypatch):
    """A reading task reads its rows ``READ_ROWS`` at a time; the joined piece is the
    piece of one read, field for field, on every sample layer (keys, empty geometries)."""
    project = api.load_project(county)
    tried = []
    for src in project.style.layers:
        if src.kind in ("gdal", "raster") or chunked.feature_count(src) < 20:
            continue
        tried.append(src.name)
        layer = project.config.layers.get(src.name)
        key = layer.key if layer else None
        n = chunked.feature_count(src)
        monkeypatch.setattr(chunked, "READ_ROWS", 10**9)
        whole = chunked.read_piece(src, project.scheme.crs, key, 3, n - 5)
        monkeypatch.setattr(chunked, "READ_ROWS", 7)
        parts = chunked.read_piece(src, project.scheme.crs, key, 3, n - 5)
        for f in dataclasses.fields(whole):
            a, b = getattr(whole, f.name), getattr(parts, f.name)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and np.array_equal(a, b), (src.name, f.name)
            else:
                assert a == b
    assert {"parcels", "buildings", "roads"} <= set(tried)  # roads: a key field


def test_a_dense_run_of_features_is_read_by_position(tmp_path, monkeypatch):
    """A render task's features read as one run of rows (skip/max) equal the read by
    feature id: with rows of no geometry before them (``slack``), deleted rows (gaps in
    the ids), in a shapefile and a GeoPackage; a wrong ``first`` falls back to ids."""
    import pyogrio
    import shapely

    from tiledelta.sources import LayerSource

    n = 300
    geoms = [shapely.box(i * 10.0, 0, i * 10.0 + 5, 5) for i in range(n)]
    wkb = np.array([None if i in (3, 7, 150) else shapely.to_wkb(g) for i, g in enumerate(geoms)])
    kind = np.array([f"k{i % 4}" for i in range(n)], dtype=object)
    calls: list[dict] = []
    real = chunked.read_raw

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(chunked, "read_raw", spy)
    for driver, name in (("GPKG", "t.gpkg"), ("ESRI Shapefile", "t.shp")):
        path = tmp_path / name
        keep = np.array([i not in (40, 41, 200) for i in range(n)])  # deleted rows
        pyogrio.raw.write(
            str(path), wkb[keep], [kind[keep]], ["kind"], driver=driver,
            geometry_type="Polygon", crs="EPSG:3857",
        )  # fmt: skip
        src = LayerSource(name="t", kind="ogr", path=str(path), attributes=("kind",))
        full = chunked.read_fids(src, "EPSG:3857", None, chunked.read_raw(src, None).fids)
        all_fids = np.asarray(full.keys, dtype=np.int64)  # rows with geometry, scan order
        nulls = len(full.null_keys)
        assert nulls == 3
        for a, b in ((0, 20), (30, 120), (100, len(all_fids))):
            want = all_fids[a:b]
            calls.clear()
            by_id = chunked.read_fids(src, "EPSG:3857", None, want)
            calls.clear()
            fast = chunked.read_fids(src, "EPSG:3857", None, want, None, a, nulls)
            assert [c.get("skip_features") for c in calls] == [a], driver
            for f in ("keys", "bounds", "fingerprints"):
                assert np.array_equal(getattr(fast, f), getattr(by_id, f)), (driver, f)
            assert list(fast.wkb) == list(by_id.wkb) and fast.attrs == by_id.attrs
        # too late a start: the run misses the first features, so they are read by id
        want = all_fids[30:120]
        calls.clear()
        late = chunked.read_fids(src, "EPSG:3857", None, want, None, 60, nulls)
        assert "fids" in calls[-1] and np.array_equal(late.keys, want)
        # sparse features: read by id at once
        calls.clear()
        chunked.read_fids(src, "EPSG:3857", None, all_fids[::3], None, 0, nulls)
        assert len(calls) == 1 and "fids" in calls[0]
