"""Fidelity: tiledelta's tiles equal what Mapnik itself draws from the original style.

The oracle is Mapnik alone: the style file loaded with its own datasources (shapefiles,
which Mapnik reads in file order), each meta-tile drawn with the same buffer and cut
into tiles. tiledelta reads the data itself and hands Mapnik in-memory datasources; if
that ever changed what is drawn (order, attribute values, the features a meta-tile
sees), these tiles would differ. The tile grid is computed here from Web Mercator's
definition, not with tiledelta's grid code.

Measured on mapnik 4.x: every compared tile is pixel-identical (0 pixels differ); the
check allows at most one colour level at no more than 0.1 % of a tile's pixels.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from PIL import Image

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.project import Project
from tiledelta.render._mapnik import mapnik
from tiledelta.stores import open_project_store

HALF = 20037508.342787
RES0 = 156543.033928
META, TILE, BUFFER = 4, 256, 64

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
      <MarkersSymbolizer fill="#d95f02" width="9" height="9" stroke="#ffffff"
          allow-overlap="true"/>
      <TextSymbolizer face-name="DejaVu Sans Bold" size="12" fill="#202020"
          halo-fill="#ffffff" halo-radius="4" dy="-14" dx="6"
          placement="point">[label]</TextSymbolizer>
    </Rule>
  </Style>
  <Layer name="water" srs="epsg:3857"><StyleName>water</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/water.shp</Parameter></Datasource></Layer>
  <Layer name="parcels" srs="epsg:3857"><StyleName>parcels</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/parcels.shp</Parameter></Datasource></Layer>
  <Layer name="buildings" srs="epsg:3857"><StyleName>buildings</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/buildings.shp</Parameter></Datasource></Layer>
  <Layer name="roads" srs="epsg:3857"><StyleName>roads</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/roads.shp</Parameter></Datasource></Layer>
  <Layer name="pois" srs="epsg:3857"><StyleName>pois</StyleName>
    <Datasource><Parameter name="type">shape</Parameter>
      <Parameter name="file">shp/pois.shp</Parameter></Datasource></Layer>
</Map>
"""


def _shapefiles(county: Path) -> None:
    """The sample county as shapefiles, plus labelled points (every 7th building)."""
    out = county / "shp"
    out.mkdir()
    gpkg = county / "data" / "county.gpkg"
    for layer in ("water", "parcels", "buildings", "roads"):
        meta, _fids, geoms, values = pyogrio.raw.read(gpkg, layer=layer)
        pyogrio.raw.write(
            out / f"{layer}.shp",
            geoms,
            list(values),
            fields=meta["fields"],
            geometry_type=meta["geometry_type"],
            crs="EPSG:3857",
            driver="ESRI Shapefile",
        )
    _meta, _fids, geoms, _values = pyogrio.raw.read(gpkg, layer="buildings")
    pts = shapely.centroid(shapely.from_wkb(geoms[::7]))
    labels = np.array([f"Site {i}" for i in range(len(pts))], dtype=object)
    pyogrio.raw.write(
        out / "pois.shp",
        np.asarray(shapely.to_wkb(pts), dtype=object),
        [labels],
        fields=["label"],
        geometry_type="Point",
        crs="EPSG:3857",
        driver="ESRI Shapefile",
    )


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fidelity") / "county"
    sample.generate(root)
    _shapefiles(root)
    (root / "style.xml").write_text(STYLE, encoding="utf-8")
    init_project(root, style=root / "style.xml", levels="15-17", force=True)
    Project.load(root).updated(render={"processes": 1}).save()
    seed(load_project(root), notify=False)
    return root


def _oracle_tiles(style: Path, level: int, mrow: int, mcol: int) -> dict:
    """Mapnik alone: the style's own datasources, one meta-tile, cut into tiles."""
    res = RES0 / 2**level
    size = META * TILE
    m = mapnik.Map(size, size)
    mapnik.load_map(m, str(style))
    m.buffer_size = BUFFER
    xmin = -HALF + mcol * size * res
    ymax = HALF - mrow * size * res
    m.zoom_to_box(mapnik.Box2d(xmin, ymax - size * res, xmin + size * res, ymax))
    im = mapnik.Image(size, size)
    mapnik.render(m, im)
    out = {}
    for j in range(META):
        for i in range(META):
            view = im.view(i * TILE, j * TILE, TILE, TILE)
            out[(level, mrow * META + j, mcol * META + i)] = _pixels(view.to_string("png32"))
    return out


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int16)


def _metatiles_over_town(level: int) -> list[tuple[int, int]]:
    """A 2 × 3 block of meta-tiles over the middle of the sample town."""
    cx = sample.X0 + sample.NX * (sample.BLOCK + sample.STREET) / 2
    cy = sample.Y0 + sample.NY * (sample.BLOCK + sample.STREET) / 2
    span = META * TILE * RES0 / 2**level
    mcol, mrow = int((cx + HALF) // span), int((HALF - cy) // span)
    return [(mrow + dr, mcol + dc) for dr in (-1, 0) for dc in (-1, 0, 1)]


def test_tiles_equal_mapnik_drawing_the_original_style(county: Path) -> None:
    style = county / "style.xml"
    compared = differing = 0
    worst = 0
    with open_project_store(load_project(county), create=False) as store:
        for level in (15, 16, 17):
            for mrow, mcol in _metatiles_over_town(level):
                for addr, want in _oracle_tiles(style, level, mrow, mcol).items():
                    data = store.get(*addr)
                    if data is None:  # not stored: blank, so Mapnik drew background only
                        bg = want[0, 0]
                        assert (want == bg).all(), f"tile {addr} missing but not blank"
                        continue
                    got = _pixels(data)
                    diff = np.abs(got - want).max(axis=2)
                    compared += 1
                    worst = max(worst, int(diff.max()))
                    off = int((diff > 0).sum())
                    differing += off
                    assert diff.max() <= 1 and off <= TILE * TILE // 1000, (
                        f"tile {addr}: {off} pixels differ, by up to {diff.max()} levels"
                    )
    assert compared >= 60  # most tiles over the town hold something
    print(f"fidelity: {compared} tiles compared, {differing} pixels differ, worst {worst}")


def test_a_reversed_shapefile_changes_mapnik_and_tiledelta_alike(county: Path, tmp_path) -> None:
    """Mapnik's own drawing depends on the file's order; so must the cache after update."""
    copy = tmp_path / "county"
    shutil.copytree(county, copy)
    for name in ("buildings", "pois"):
        meta, _f, geoms, values = pyogrio.raw.read(copy / "shp" / f"{name}.shp")
        pyogrio.raw.write(
            copy / "shp" / f"{name}.shp",
            geoms[::-1],
            [v[::-1] for v in values],
            fields=meta["fields"],
            geometry_type=meta["geometry_type"],
            crs="EPSG:3857",
            driver="ESRI Shapefile",
        )
    from tiledelta.api import update

    update(load_project(copy), notify=False)
    style = copy / "style.xml"
    with open_project_store(load_project(copy), create=False) as store:
        for level in (16, 17):
            for mrow, mcol in _metatiles_over_town(level):
                for addr, want in _oracle_tiles(style, level, mrow, mcol).items():
                    data = store.get(*addr)
                    got = (
                        _pixels(data)
                        if data is not None
                        else np.broadcast_to(want[0, 0], want.shape)
                    )
                    assert np.abs(got - want).max() <= 1, f"tile {addr} is stale after the reorder"
