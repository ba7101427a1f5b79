"""Raster layers (Mapnik ``gdal`` datasource): block-by-block change detection and the
invariant, on real GeoTIFFs and VRTs written with rasterio (no mocks).

Each edit (a window of new pixels, a replaced or added mosaic file, a changed nodata
value) is followed by ``update`` and compared with a fresh seed (0 differ, 0 missing,
0 extra); the meta-tiles re-rendered are compared with a set computed independently
(rasterio's ``transform_bounds`` of the changed blocks, a brute-force scan of the grid);
and tiles are compared with Mapnik drawing the original style from its own datasource.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window
from test_update import assert_cache_equals_fresh_seed, copy_project, read_cache

from tiledelta import api, sample
from tiledelta.build.update import plan_update
from tiledelta.change import detect_changes
from tiledelta.change.raster import file_changes, load_raster_files
from tiledelta.config import LayerConfig
from tiledelta.errors import SourceError
from tiledelta.grid import metatile_bounds, metatile_grid, query_pad
from tiledelta.render._mapnik import mapnik
from tiledelta.sources import read_layers
from tiledelta.sources.raster import REACH

CLI = Path(sys.executable).parent / "tiledelta"
LEVELS = "13-17"
CRS = "EPSG:26910"


# --- projects ------------------------------------------------------------------------------


def _init(folder: Path, levels: str = LEVELS) -> Path:
    api.init_project(
        folder, style=folder / "style.xml", levels=levels, cache_kind="compact", force=True
    )
    project = api.load_project(folder).updated(render={"processes": 1})
    project.save()
    api.seed(api.load_project(folder), notify=False)
    return folder


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> Path:
    """The sample county with its hillshade under the vectors, seeded at levels 13-17."""
    d = tmp_path_factory.mktemp("raster") / "county"
    sample.generate(d, hillshade=True)
    return _init(d)


@pytest.fixture(scope="module")
def hillshade(tmp_path_factory) -> Path:
    """The sample hillshade alone (bilinear), so Mapnik's own datasource can draw all of it."""
    d = tmp_path_factory.mktemp("hill") / "h"
    (d / "data").mkdir(parents=True)
    sample.write_hillshade(d)
    (d / "style.xml").write_text(
        RASTER_ONLY.format(scaling="bilinear", file="data/hillshade.tif"), encoding="utf-8"
    )
    return _init(d)


PLUGIN = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#f4f1ea">
  <Style name="shade"><Rule><RasterSymbolizer scaling="near"/></Rule></Style>
  <Layer name="shade" srs="epsg:26910">
    <StyleName>shade</StyleName>
    <Datasource>
      <Parameter name="type">raster</Parameter>
      <Parameter name="file">data/plain.tif</Parameter>
      <Parameter name="extent">{extent}</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """Mapnik's own ``raster`` plugin (its TIFF reader; the extent from the XML)."""
    d = tmp_path_factory.mktemp("plugin") / "p"
    (d / "data").mkdir(parents=True)
    x0, y0 = MOSAIC_ORIGIN
    with rasterio.open(
        d / "data" / "plain.tif", "w", driver="GTiff", width=512, height=512, count=1,
        dtype="uint8", crs=CRS, transform=from_origin(x0, y0, PIXEL, PIXEL), tiled=True,
        blockxsize=256, blockysize=256,
    ) as ds:  # fmt: skip
        ds.write(np.tile(_tile_pixels(5), (2, 2)), 1)
    extent = f"{x0},{y0 - 512 * PIXEL},{x0 + 512 * PIXEL},{y0}"
    (d / "style.xml").write_text(PLUGIN.format(extent=extent), encoding="utf-8")
    return _init(d, "12-16")


def test_raster_plugin_window_edit(plugin, tmp_path):
    d = copy_project(plugin, tmp_path / "p", with_state=True)
    with rasterio.open(d / "data" / "plain.tif", "r+") as ds:
        ds.write(np.full((1, 20, 20), 3, np.uint8), window=Window(300, 40, 20, 20))
    project = api.load_project(d)
    assert detect_changes(project).layers["shade"].as_dict() == {
        "added": 0,
        "modified": 1,
        "deleted": 0,
    }
    api.update(project, notify=False)
    assert_cache_equals_fresh_seed(d)


RASTER_ONLY = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#f4f1ea">
  <Style name="shade"><Rule><RasterSymbolizer scaling="{scaling}" opacity="0.8"/></Rule></Style>
  <Layer name="shade" srs="epsg:26910">
    <StyleName>shade</StyleName>
    <Datasource>
      <Parameter name="type">gdal</Parameter>
      <Parameter name="file">{file}</Parameter>
    </Datasource>
  </Layer>
</Map>
"""

#: a 2 x 2 mosaic of 256 x 256 tiles at 4 m, over the sample town (UTM 10N)
MOSAIC_ORIGIN = (434900.0, 5112000.0)
TILE_PX, PIXEL = 256, 4.0


def _tile_pixels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:TILE_PX, 0:TILE_PX]
    base = 128 + 60 * np.sin((xx + seed * 37) / 19.0) * np.cos(yy / 23.0)
    return np.clip(base + rng.normal(0, 8, base.shape), 1, 255).astype(np.uint8)


def _write_tile(path: Path, i: int, j: int, seed: int) -> None:
    x0, y0 = MOSAIC_ORIGIN
    t = from_origin(x0 + i * TILE_PX * PIXEL, y0 - j * TILE_PX * PIXEL, PIXEL, PIXEL)
    with rasterio.open(
        path, "w", driver="GTiff", width=TILE_PX, height=TILE_PX, count=1, dtype="uint8",
        crs=CRS, transform=t, nodata=0, tiled=True, blockxsize=128, blockysize=128,
    ) as ds:  # fmt: skip
        ds.write(_tile_pixels(seed), 1)


def _write_vrt(path: Path, tiles: list[tuple[str, int, int]]) -> None:
    """A VRT mosaic (as gdalbuildvrt writes one) of a 2 x 2 grid; ``tiles``: (file, i, j)."""
    x0, y0 = MOSAIC_ORIGIN
    sources = "".join(
        f"""
    <SimpleSource>
      <SourceFilename relativeToVRT="1">{name}</SourceFilename>
      <SourceBand>1</SourceBand>
      <SourceProperties RasterXSize="{TILE_PX}" RasterYSize="{TILE_PX}" DataType="Byte"
          BlockXSize="128" BlockYSize="128"/>
      <SrcRect xOff="0" yOff="0" xSize="{TILE_PX}" ySize="{TILE_PX}"/>
      <DstRect xOff="{i * TILE_PX}" yOff="{j * TILE_PX}" xSize="{TILE_PX}" ySize="{TILE_PX}"/>
    </SimpleSource>"""
        for name, i, j in tiles
    )
    wkt = rasterio.crs.CRS.from_string(CRS).to_wkt()
    path.write_text(
        f"""<VRTDataset rasterXSize="{2 * TILE_PX}" rasterYSize="{2 * TILE_PX}">
  <SRS>{wkt}</SRS>
  <GeoTransform>{x0}, {PIXEL}, 0, {y0}, 0, {-PIXEL}</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1">
    <NoDataValue>0</NoDataValue>
    <ColorInterp>Gray</ColorInterp>{sources}
  </VRTRasterBand>
</VRTDataset>
""",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> Path:
    """A raster-only project drawing a VRT of three tiles (the fourth place is empty)."""
    d = tmp_path_factory.mktemp("mosaic") / "m"
    (d / "tiles").mkdir(parents=True)
    for k, (i, j) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        _write_tile(d / "tiles" / f"t{i}{j}.tif", i, j, seed=k + 1)
    _write_vrt(
        d / "tiles" / "mosaic.vrt", [("t00.tif", 0, 0), ("t10.tif", 1, 0), ("t01.tif", 0, 1)]
    )
    (d / "style.xml").write_text(
        RASTER_ONLY.format(scaling="bicubic", file="tiles/mosaic.vrt"), encoding="utf-8"
    )
    return _init(d, "12-16")


# --- the independent oracle ----------------------------------------------------------------


def _expected_metatiles(project, boxes_src: list[tuple[float, float, float, float]], grow_px):
    """Meta-tiles (level, row, col) whose buffered extent meets any source-CRS box grown by
    ``grow_px`` source pixels: rasterio's densified transform_bounds and a scan of every
    meta-tile of the grid near the boxes."""
    scheme, meta = project.scheme, project.settings.metatile
    out = set()
    boxes = [
        rasterio.warp.transform_bounds(
            CRS,
            scheme.crs,
            x0 - grow_px[0],
            y0 - grow_px[1],
            x1 + grow_px[0],
            y1 + grow_px[1],
            densify_pts=21,
        )  # fmt: skip
        for x0, y0, x1, y1 in boxes_src
    ]
    for level in project.levels:
        pad = query_pad(scheme, level, project.settings.buffer)
        grid = metatile_grid(scheme, level, meta)
        assert grid is not None
        rows, cols = grid
        span = meta * scheme.tile_width * scheme.resolution(level)
        ox, oy = scheme.origin_x, scheme.origin_y
        for bx0, by0, bx1, by1 in boxes:
            c0 = max(0, int((bx0 - pad - ox) // span) - 1)
            c1 = min(cols - 1, int((bx1 + pad - ox) // span) + 1)
            r0 = max(0, int((oy - by1 - pad) // span) - 1)
            r1 = min(rows - 1, int((oy - by0 + pad) // span) + 1)
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    b = metatile_bounds(scheme, level, r, c, meta)
                    if (
                        b.xmin - pad <= bx1
                        and b.xmax + pad >= bx0
                        and b.ymin - pad <= by1
                        and b.ymax + pad >= by0
                    ):
                        out.add((level, r, c))
    return out


def _planned(project) -> set[tuple[int, int, int]]:
    layers = read_layers(project)
    changes = detect_changes(project, layers)
    assert changes.rebuild is None, changes.rebuild
    plan = plan_update(project, changes, layers)
    return {(lv, int(r), int(c)) for lv, mts in plan.levels.items() for r, c in mts}


def _block_box(path: Path, row: int, col: int, size: int) -> tuple[float, float, float, float]:
    with rasterio.open(path) as ds:
        t = ds.transform
    x0, y1 = t * (col * size, row * size)
    x1, y0 = t * ((col + 1) * size, (row + 1) * size)
    return (x0, y0, x1, y1)


def _changed_metatiles(before: dict, after: dict, meta: int) -> set[tuple[int, int, int]]:
    return {
        (lv, r // meta, c // meta)
        for (lv, r, c) in set(before) | set(after)
        if before.get((lv, r, c)) != after.get((lv, r, c))
    }


# --- 1. a window of new pixels -------------------------------------------------------------


def test_window_edit_updates_like_a_fresh_seed(county, tmp_path):
    d = copy_project(county, tmp_path / "c", with_state=True)
    project = api.load_project(d)
    before = read_cache(d)
    full = api.seed_dry_run(project)["metatiles_planned"]
    sample.write_hillshade(d, bump=(400, 600, 40))  # rows 360-440, cols 560-640: one block
    changes = detect_changes(project)
    assert changes.layers["hillshade"].as_dict() == {"added": 0, "modified": 1, "deleted": 0}
    assert not any(c.changed for n, c in changes.layers.items() if n != "hillshade")
    px = sample.HILLSHADE_PIXEL
    grow = REACH["bilinear"] * px
    want = _expected_metatiles(project, [_block_box(d / "data/hillshade.tif", 1, 2, 256)],
                               (grow, grow))  # fmt: skip
    assert _planned(project) == want
    result = api.update(project, notify=False)
    assert result["metatiles_rendered"] == len(want) < full
    assert_cache_equals_fresh_seed(d)
    after = read_cache(d)
    changed = _changed_metatiles(before, after, project.settings.metatile)
    assert changed and changed <= want  # the pixels that changed are in the planned set
    assert not detect_changes(api.load_project(d)).any


def test_an_edit_written_back_renders_nothing(county, tmp_path):
    d = copy_project(county, tmp_path / "c", with_state=True)
    path = d / "data" / "hillshade.tif"
    with rasterio.open(path) as ds:
        old = ds.read(1, window=Window(0, 0, 256, 256))
    sample.write_hillshade(d, bump=(100, 100, 30))
    with rasterio.open(path, "r+") as ds:
        ds.write(old, 1, window=Window(0, 0, 256, 256))
    project = api.load_project(d)
    assert not detect_changes(project).any  # same bytes: same fingerprints
    assert api.update(project, notify=False)["metatiles_rendered"] == 0


# --- 2. mosaics ----------------------------------------------------------------------------


def test_replaced_mosaic_file(mosaic, tmp_path):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    project = api.load_project(d)
    full = api.seed_dry_run(project)["metatiles_planned"]
    before = read_cache(d)
    _write_tile(d / "tiles" / "t10.tif", 1, 0, seed=99)  # a re-flown tile, same footprint
    layers = read_layers(project)
    with sqlite3.connect(d / ".tiledelta" / "state.sqlite") as con:
        fc = file_changes(load_raster_files(con), layers)
    assert [(Path(f.path).name, f.what, f.blocks) for f in fc] == [("t10.tif", "changed", 4)]
    grow = REACH["bicubic"] * PIXEL
    x0, y0 = MOSAIC_ORIGIN
    tile = (x0 + TILE_PX * PIXEL, y0 - TILE_PX * PIXEL, x0 + 2 * TILE_PX * PIXEL, y0)
    want = _expected_metatiles(project, [tile], (grow, grow))
    assert _planned(project) == want
    result = api.update(project, notify=False)
    assert result["metatiles_rendered"] == len(want) < full
    assert_cache_equals_fresh_seed(d)
    assert _changed_metatiles(before, read_cache(d), project.settings.metatile) <= want


def test_added_and_removed_mosaic_files(mosaic, tmp_path):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    vrt = d / "tiles" / "mosaic.vrt"
    all4 = [("t00.tif", 0, 0), ("t10.tif", 1, 0), ("t01.tif", 0, 1), ("t11.tif", 1, 1)]
    _write_vrt(vrt, all4)
    project = api.load_project(d)
    with sqlite3.connect(d / ".tiledelta" / "state.sqlite") as con:
        fc = file_changes(load_raster_files(con), read_layers(project))
    assert [(Path(f.path).name, f.what) for f in fc] == [("t11.tif", "added")]
    api.update(project, notify=False)
    assert_cache_equals_fresh_seed(d)
    _write_vrt(vrt, all4[1:])  # t00 taken out of the mosaic: a quarter of the blocks
    with sqlite3.connect(d / ".tiledelta" / "state.sqlite") as con:
        fc = file_changes(load_raster_files(con), read_layers(project))
    assert [(Path(f.path).name, f.what) for f in fc] == [("t00.tif", "removed")]
    api.update(project, notify=False, allow_mass_delete=True)
    assert_cache_equals_fresh_seed(d)


# --- 3. file-level changes dirty the whole file ----------------------------------------------


def test_changed_nodata_dirties_the_whole_file(county, tmp_path):
    d = copy_project(county, tmp_path / "c", with_state=True)
    with rasterio.open(d / "data" / "hillshade.tif", "r+") as ds:
        ds.nodata = 255
        nblocks = len(list(ds.block_windows(1)))
    project = api.load_project(d)
    changes = detect_changes(project)
    assert changes.layers["hillshade"].modified == nblocks
    w, h = sample.HILLSHADE_SIZE
    x0, y1 = sample.HILLSHADE_ORIGIN
    px = sample.HILLSHADE_PIXEL
    grow = REACH["bilinear"] * px
    extent = (x0, y1 - h * px, x0 + w * px, y1)
    want = _expected_metatiles(project, [extent], (grow, grow))
    assert _planned(project) == want
    api.update(project, notify=False)
    assert_cache_equals_fresh_seed(d)


# --- 4. Mapnik's own gdal datasource draws the same pixels -----------------------------------


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.int16)


@pytest.mark.parametrize("which", ["hillshade", "mosaic", "plugin"])
def test_tiles_equal_mapnik_drawing_the_original_style(which, request):
    d = request.getfixturevalue(which)
    project = api.load_project(d)
    scheme, meta, tw = project.scheme, project.settings.metatile, project.scheme.tile_width
    cache = read_cache(d)
    metatiles = sorted({(lv, r // meta, c // meta) for lv, r, c in cache})
    checked = 0
    for level, mrow, mcol in metatiles[:: max(1, len(metatiles) // 12)]:
        m = mapnik.Map(meta * tw, meta * tw)
        mapnik.load_map(m, str(d / "style.xml"))  # its own datasources, nothing of ours
        m.buffer_size = project.settings.buffer
        b = metatile_bounds(scheme, level, mrow, mcol, meta)
        m.zoom_to_box(mapnik.Box2d(b.xmin, b.ymin, b.xmax, b.ymax))
        im = mapnik.Image(meta * tw, meta * tw)
        mapnik.render(m, im)
        for j in range(meta):
            for i in range(meta):
                tile = cache.get((level, mrow * meta + j, mcol * meta + i))
                if tile is None:
                    continue
                want = _pixels(im.view(i * tw, j * tw, tw, tw).to_string("png32"))
                assert np.array_equal(_pixels(tile), want), (level, mrow, mcol, i, j)
                checked += 1
    assert checked >= 12


# --- 5. bad input: one line naming the file, nothing written ---------------------------------


def _state(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file()
        and "runs" not in p.parts
        and p.name != "run.lock"  # the pid of the last run that held the lock
        and not p.name.endswith(("-wal", "-shm"))
    }


def _unreadable(d: Path) -> str:
    path = d / "tiles" / "t01.tif"
    path.write_bytes(b"II*\0" + os.urandom(300))
    return str(path)


def _truncated(d: Path) -> str:
    path = d / "tiles" / "t00.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # caught mid-copy: the header, half the tiles
    return "t00.tif"


def _missing_source(d: Path) -> str:
    (d / "tiles" / "t10.tif").unlink()
    return "t10.tif"


def _unknown_crs(d: Path) -> str:
    style = d / "style.xml"
    style.write_text(style.read_text().replace('srs="epsg:26910"', 'srs="epsg:999999"'))
    return "epsg:999999"  # status names the raster and the srs, a rebuild Mapnik's reason


def _no_crs(d: Path) -> str:
    style = d / "style.xml"
    style.write_text(style.read_text().replace(' srs="epsg:26910"', ""))
    vrt = d / "tiles" / "mosaic.vrt"
    text = vrt.read_text()
    vrt.write_text(text[: text.index("<SRS>")] + text[text.index("</SRS>") + 6 :])
    return "mosaic.vrt"


def _nodata_wrong_type(d: Path) -> str:
    style = d / "style.xml"
    style.write_text(
        style.read_text().replace(
            "</Datasource>", '  <Parameter name="nodata">-9999</Parameter>\n    </Datasource>'
        )
    )
    return "mosaic.vrt"


@pytest.mark.parametrize(
    "breakage",
    [_unreadable, _truncated, _missing_source, _unknown_crs, _no_crs, _nodata_wrong_type],
)
def test_bad_raster_input_is_one_line_and_writes_nothing(mosaic, tmp_path, breakage):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    style = (d / "style.xml").read_bytes()
    named = breakage(d)
    before = _state(d)
    # after a style edit, status only says "full rebuild" (it reads no data): update reads
    for cmd in ("status", "update") if (d / "style.xml").read_bytes() == style else ("update",):
        proc = subprocess.run(
            [str(CLI), cmd, "--project", str(d)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert _state(d) == before


def test_a_raster_layer_needs_a_buffer(mosaic, tmp_path):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    project = api.load_project(d).updated(render={"buffer": 0})
    with pytest.raises(SourceError, match="buffer of 0 pixels"):
        read_layers(project)


# --- 6. trusting size and mtime ------------------------------------------------------------


def test_trust_mtime_skips_unchanged_files_and_says_what_it_trusts(mosaic, tmp_path):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    path = d / "tiles" / "t00.tif"
    st = path.stat()
    with rasterio.open(path, "r+") as ds:  # same size (uncompressed), then mtime put back
        ds.write(np.full((8, 8), 7, np.uint8), 1, window=Window(0, 0, 8, 8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    project = api.load_project(d)
    assert detect_changes(project).layers["shade"].modified == 1  # hashed: found
    trusting = project.updated(layers={"shade": LayerConfig(trust_mtime=True)})
    assert not detect_changes(trusting).layers["shade"].changed  # trusted: not read
    os.utime(path)  # a new mtime: read again, found even when trusting
    assert detect_changes(trusting).layers["shade"].modified == 1


def test_a_snapshot_without_the_raster_table_still_loads(mosaic, tmp_path):
    d = copy_project(mosaic, tmp_path / "m", with_state=True)
    with sqlite3.connect(d / ".tiledelta" / "state.sqlite") as con:
        con.execute("DROP TABLE raster_files")
    project = api.load_project(d).updated(layers={"shade": LayerConfig(trust_mtime=True)})
    changes = detect_changes(project)
    assert changes.rebuild is None and not changes.any


def test_the_demo_data_draws_vectors_over_the_hillshade(county):
    """The hillshade is the first layer: it shows between the parcels (street pixels vary)
    and the roads' colour is drawn over it."""
    project = api.load_project(county)
    assert [lyr.name for lyr in project.style.layers][0] == "hillshade"
    tiles = read_cache(county)
    level = max(project.levels)
    greys = set()
    for (lv, _r, _c), png in tiles.items():
        if lv == level:
            px = _pixels(png)
            greys |= {tuple(p) for p in px.reshape(-1, 4)[::97].tolist()}
    assert len(greys) > 50  # a flat background and symbol colours alone give far fewer


def test_sample_county_without_hillshade_is_unchanged(tmp_path):
    sample.generate(tmp_path / "plain")
    assert "RasterSymbolizer" not in (tmp_path / "plain" / "style.xml").read_text()
    assert not (tmp_path / "plain" / "data" / "hillshade.tif").exists()
    shutil.rmtree(tmp_path / "plain")
