"""Compact Cache V2 store, conf.xml import/export and the .tpkx reader, on real files."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiledelta.errors import CacheError
from tiledelta.grid import (
    LOD,
    Bounds,
    TilingScheme,
    is_web_mercator,
    scheme_from_conf_xml,
    scheme_to_conf_xml,
    web_mercator,
)
from tiledelta.stores import CompactCache, open_store, open_tpkx, read_compact_cache

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "data" / "esri_samples"
NS = "{http://www.esri.com/schemas/ArcGIS/10.0}"


def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"Esri sample data not available ({SAMPLES} is absent)")
    return SAMPLES


def make_png(level: int, row: int, col: int, size: int = 256) -> bytes:
    """An RGBA PNG whose colour encodes its address (and a marker in the top-left corner)."""
    a = np.zeros((size, size, 4), np.uint8)
    a[..., 0] = (level * 40) % 256
    a[..., 1] = row % 256
    a[..., 2] = col % 256
    a[..., 3] = 255
    a[:8, :16, :3] = 250
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def state_plane() -> TilingScheme:
    """Oregon North (EPSG:2913, international feet), ArcGIS's default origin, custom scales."""
    scales = [1600000, 800000, 400000, 200000, 100000, 50000, 24000, 12000, 6000, 3000, 1200]
    lods = tuple(
        LOD(level=i, scale=s, resolution=s / 96 * 0.0254 / 0.3048) for i, s in enumerate(scales)
    )
    return TilingScheme(
        name="oregon-north",
        crs="EPSG:2913",
        wkid=2913,
        latest_wkid=2913,
        origin_x=-117104300.0,
        origin_y=136876000.0,
        lods=lods,
        extent=Bounds(7_000_000.0, 500_000.0, 8_500_000.0, 1_700_000.0),
    )


def parse_bundle(path: Path) -> tuple[tuple[int, ...], list[int], bytes]:
    """Header fields, 16384 index records and the whole file, parsed with struct only."""
    data = path.read_bytes()
    header = struct.unpack("<4I3Q6I", data[:64])
    index = list(struct.unpack("<16384Q", data[64 : 64 + 131072]))
    return header, index, data


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------- Esri samples


def test_sample_cache_tiles_equal_loose_files() -> None:
    root = samples()
    cache = read_compact_cache(root / "compact_cache_v2")
    loose = sorted((root / "compact_cache_v2_tiles").rglob("*.jpg"))
    assert loose, "no loose sample tiles"
    expected = {}
    for f in loose:
        level = int(f.parent.parent.name.lstrip("L"))
        expected[(level, int(f.parent.name), int(f.stem))] = f.read_bytes()
    assert set(cache.iter_tiles()) == set(expected)
    for (level, row, col), data in expected.items():
        assert cache.get(level, row, col) == data
    assert cache.get_many(expected) == expected
    assert cache.count() == {0: 1, 1: 4, 2: 16}
    assert cache.get(2, 0, 4) is None  # inside the bundle, no tile
    assert cache.get(3, 0, 0) is None  # no bundle


def test_sample_conf_xml_imports() -> None:
    conf = samples() / "compact_cache_v2" / "conf.xml"
    scheme = scheme_from_conf_xml(conf)
    assert scheme.crs == "EPSG:3857"
    assert scheme.levels == list(range(20))
    assert scheme.same_grid(web_mercator())
    assert is_web_mercator(scheme)
    cache = read_compact_cache(conf)
    assert cache.fmt == "jpeg"
    assert cache.quality == 75
    assert cache.read_extent() == pytest.approx(
        (-20037507.229594339, -20037507.229594339, 20037507.229594339, 20037507.229594339)
    )
    with pytest.raises(CacheError, match="read-only"):
        cache.put_many([(0, 0, 0, b"x")])


def test_tpkx_tiles_decode_and_scheme_is_sane() -> None:
    path = samples() / "tpkx" / "Usa.tpkx"
    with open_tpkx(path) as pkg:
        scheme = pkg.scheme
        assert scheme.same_grid(web_mercator())
        assert scheme.crs == "EPSG:3857"
        assert (scheme.tile_width, scheme.tile_height, scheme.dpi) == (256, 256, 96)
        assert scheme.levels == list(range(24))
        assert pkg.fmt == "png"
        counts = pkg.count()
        assert sorted(counts) == [0, 1, 2, 3, 4, 5]
        addrs = list(pkg.iter_tiles())
        assert len(addrs) == sum(counts.values())
        for level, row, col in addrs:
            assert 0 <= row < 2**level and 0 <= col < 2**level
            img = Image.open(io.BytesIO(pkg.get(level, row, col) or b""))
            img.load()
            assert img.size == (256, 256)
        assert pkg.get(5, 31, 0) is None or (5, 31, 0) in addrs
        with pytest.raises(CacheError):
            pkg.put_many([])
        # ArcGIS wrote L00's only tile with its PNG signature overwritten by the length
        # prefix; the reader restores the signature (other tiles come back byte for byte).
        with zipfile.ZipFile(path) as z:
            raw = z.read("tile/L00/R0000C0000.bundle")
            raw2 = z.read("tile/L02/R0000C0000.bundle")
        rec = struct.unpack_from("<Q", raw, 64)[0]
        off, size = rec & (2**40 - 1), rec >> 40
        assert raw[off : off + 4] == b"\r\n\x1a\n"
        assert pkg.get(0, 0, 0) == b"\x89PNG" + raw[off : off + size]
        rec = struct.unpack_from("<Q", raw2, 64 + 8 * 129)[0]
        off, size = rec & (2**40 - 1), rec >> 40
        assert pkg.get(2, 1, 1) == raw2[off : off + size]


# ------------------------------------------------------------------ round trip


def test_round_trip_across_bundles(tmp_path: Path) -> None:
    scheme = web_mercator()
    addrs = [(9, r, c) for r in (0, 127, 128, 300) for c in (1, 127, 128, 511)]
    addrs += [(3, r, c) for r in range(8) for c in range(8)] + [(0, 0, 0)]
    tiles = {a: make_png(*a) for a in addrs}
    with open_store("compact", tmp_path / "c", scheme) as store:
        assert isinstance(store, CompactCache)
        assert store.put_many((*a, d) for a, d in tiles.items()) == len(tiles)
        assert store.put_many([(9, 0, 1, None), (9, 5, 5, None), (3, 2, 2, None)]) == 2
        del tiles[(9, 0, 1)], tiles[(3, 2, 2)]
        replaced = make_png(0, 99, 99)
        assert store.put_many([(0, 0, 0, replaced)]) == 1
        tiles[(0, 0, 0)] = replaced

    names = sorted(p.name for p in (tmp_path / "c" / "_alllayers" / "L09").iterdir())
    assert names == [
        "R0000C0000.bundle", "R0000C0080.bundle", "R0000C0180.bundle",
        "R0080C0000.bundle", "R0080C0080.bundle", "R0080C0180.bundle",
        "R0100C0000.bundle", "R0100C0080.bundle", "R0100C0180.bundle",
    ]  # fmt: skip
    cache = read_compact_cache(tmp_path / "c")
    assert cache.fmt == "png"
    assert set(cache.iter_tiles()) == set(tiles)
    assert sorted(cache.iter_tiles(3)) == sorted(a for a in tiles if a[0] == 3)
    for (level, row, col), data in tiles.items():
        assert cache.get(level, row, col) == data
    assert cache.get_many([*tiles, (9, 0, 1), (12, 0, 0)]) == tiles
    assert cache.count() == {0: 1, 3: 63, 9: 15}
    assert temp_files(tmp_path) == []


def test_bundle_layout_follows_spec(tmp_path: Path) -> None:
    blank = make_png(0, 0, 0)
    tiles = {(4, 3, 5): make_png(4, 3, 5), (4, 0, 0): blank, (4, 15, 15): blank}
    with open_store("compact", tmp_path / "c", web_mercator()) as store:
        store.put_many((*a, d) for a, d in tiles.items())
    header, index, data = parse_bundle(tmp_path / "c" / "_alllayers" / "L04" / "R0000C0000.bundle")
    max_size = max(len(d) for d in tiles.values())
    assert header == (3, 16384, max_size, 5, 0, len(data), 40, 131092, 3, 16, 16384, 5, 131072)
    used = {}
    for pos, rec in enumerate(index):
        if rec == 0:
            continue
        offset, size = rec & (2**40 - 1), rec >> 40
        assert struct.unpack("<I", data[offset - 4 : offset])[0] == size
        used[(4, pos // 128, pos % 128)] = data[offset : offset + size]
    assert used == tiles
    # identical tiles share one copy
    assert index[0] == index[15 * 128 + 15]
    assert len(data) == 64 + 131072 + sum(4 + len(d) for d in set(tiles.values()))


def test_deleting_every_tile_removes_the_bundle(tmp_path: Path) -> None:
    with open_store("compact", tmp_path / "c", web_mercator()) as store:
        store.put_many([(2, 1, 1, make_png(2, 1, 1)), (2, 1, 2, make_png(2, 1, 2))])
        bundle = store.bundle_path(2, 1, 1)
        assert bundle.is_file()
        assert store.put_many([(2, 1, 1, None), (2, 1, 2, None), (2, 0, 0, None)]) == 2
        assert not bundle.exists()
        assert store.count() == {}
        assert store.get(2, 1, 1) is None


def test_concurrent_writers_to_one_bundle_lose_nothing(tmp_path: Path) -> None:
    tile = make_png(7, 0, 0)
    with open_store("compact", tmp_path / "c", web_mercator()) as store:

        def write(r: int) -> int:
            return store.put_many((7, r, c, tile) for c in range(16))

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(write, range(16))) == 256
        assert store.count() == {7: 256}
        got = store.get_many((7, r, c) for r in range(16) for c in range(16))
        assert len(got) == 256 and set(got.values()) == {tile}
    # 256 identical tiles are stored once
    assert store.bundle_path(7, 0, 0).stat().st_size == 64 + 131072 + 4 + len(tile)


# --------------------------------------------------------------------- conf.xml


def test_conf_xml_shape_and_round_trip_web_mercator(tmp_path: Path) -> None:
    scheme = web_mercator(20)
    text = scheme_to_conf_xml(scheme, "jpeg", 80)
    root = ET.fromstring(text)
    assert root.tag == "CacheInfo"
    assert root.find("TileCacheInfo/SpatialReference/WKID").text == "102100"
    assert root.find("TileCacheInfo/SpatialReference/LatestWKID").text == "3857"
    assert "Mercator_Auxiliary_Sphere" in root.find("TileCacheInfo/SpatialReference/WKT").text
    assert root.find("TileImageInfo/CacheTileFormat").text == "JPEG"
    assert root.find("TileImageInfo/CompressionQuality").text == "80"
    assert root.find("CacheStorageInfo/StorageFormat").text == "esriMapCacheStorageModeCompactV2"
    assert root.find("CacheStorageInfo/PacketSize").text == "128"
    assert len(root.findall("TileCacheInfo/LODInfos/LODInfo")) == 21
    xsi = "{http://www.w3.org/2001/XMLSchema-instance}type"
    assert root.find("TileCacheInfo/TileOrigin").get(xsi) == "typens:PointN"
    back = scheme_from_conf_xml(text)
    assert back.same_grid(scheme) and is_web_mercator(back)
    assert back.crs == "EPSG:3857"
    assert [lod.scale for lod in back.lods] == [lod.scale for lod in scheme.lods]

    with open_store("compact", tmp_path / "c", scheme, fmt="png8") as store:
        assert isinstance(store, CompactCache)
        assert store.read_extent() == scheme.extent
        store.set_extent(Bounds(-1.0, -2.0, 3.5, 4.0))
        assert store.read_extent() == (-1.0, -2.0, 3.5, 4.0)
    cdi = ET.parse(tmp_path / "c" / "conf.cdi").getroot()
    assert cdi.tag == "EnvelopeN" and cdi.find("XMax").text == "3.5"
    assert read_compact_cache(tmp_path / "c").fmt == "png8"
    assert temp_files(tmp_path) == []


def test_conf_xml_round_trip_state_plane(tmp_path: Path) -> None:
    scheme = state_plane()
    back = scheme_from_conf_xml(scheme_to_conf_xml(scheme))
    assert back.same_grid(scheme)
    assert back.crs == "EPSG:2913" and back.wkid == 2913
    assert not is_web_mercator(back)
    assert [(lod.level, lod.scale) for lod in back.lods] == [
        (lod.level, lod.scale) for lod in scheme.lods
    ]
    assert "Oregon_North" in scheme_to_conf_xml(scheme)

    tiles = {(10, r, c): make_png(10, r, c) for r in (70_000, 70_001) for c in (127, 128)}
    with open_store("compact", tmp_path / "sp", scheme) as store:
        store.put_many((*a, d) for a, d in tiles.items())
    cache = read_compact_cache(tmp_path / "sp")
    assert cache.scheme.same_grid(scheme)
    assert cache.get_many(tiles) == tiles
    assert sorted(p.name for p in (tmp_path / "sp" / "_alllayers" / "L10").iterdir()) == [
        "R11100C0000.bundle",
        "R11100C0080.bundle",
    ]


def test_conf_xml_with_unknown_wkid_falls_back_to_wkt() -> None:
    wkt = scheme_to_conf_xml(state_plane()).replace("<WKID>2913</WKID>", "<WKID>999999</WKID>")
    wkt = wkt.replace("<LatestWKID>2913</LatestWKID>", "")
    back = scheme_from_conf_xml(wkt)
    assert back.crs.startswith("PROJCS[")
    assert back.wkid == 999999


# ------------------------------------------------------------------------- GDAL


def test_gdal_esric_reads_written_cache(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    scheme = web_mercator(3)  # GDAL 3.10 refuses conf.xml with LOD 23 (raster > 2^31 px)
    tiles = {
        (z, r, c): make_png(z, r, c) for z in range(4) for r in range(2**z) for c in range(2**z)
    }
    with open_store("compact", tmp_path / "c", scheme) as store:
        store.put_many((*a, d) for a, d in tiles.items())

    def pixels(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).transpose(2, 0, 1)

    with rasterio.open(tmp_path / "c" / "conf.xml") as ds:
        assert ds.driver == "ESRIC"
        assert (ds.width, ds.height, ds.count) == (2048, 2048, 4)
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.crs.to_epsg() == 3857
        assert ds.transform.c == pytest.approx(scheme.origin_x)
        assert ds.transform.a == pytest.approx(scheme.resolution(3))
        # full resolution = the finest level: tile (3, 5, 6)
        got = ds.read(window=((5 * 256, 6 * 256), (6 * 256, 7 * 256)))
        assert np.array_equal(got, pixels(tiles[(3, 5, 6)]))
    # overview i maps to level (finest - 1 - i): overview 1 = level 1
    with rasterio.open(tmp_path / "c" / "conf.xml", OVERVIEW_LEVEL=1) as ds:
        assert ds.width == 512
        got = ds.read(window=((256, 512), (0, 256)))
        assert np.array_equal(got, pixels(tiles[(1, 1, 0)]))


# ------------------------------------------------------------------- atomicity


def test_failed_replace_keeps_old_bundle_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store("compact", tmp_path / "c", web_mercator())
    store.put_many([(5, 1, 1, make_png(5, 1, 1))])
    bundle = store.bundle_path(5, 1, 1)
    before = bundle.read_bytes()
    seen: list[Path] = []

    def boom(src: str, dst: str) -> None:
        seen.append(Path(src))
        assert Path(src).stat().st_size > 131136  # the new bundle was fully written
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", boom)
    # One line naming the bundle (an OSError becomes a CacheError, stores/base.py).
    with pytest.raises(CacheError, match=r"R0000C0000\.bundle: simulated crash"):
        store.put_many([(5, 1, 2, make_png(5, 1, 2)), (5, 1, 1, None)])
    monkeypatch.undo()
    assert seen and seen[0].parent == bundle.parent
    assert bundle.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert store.get(5, 1, 1) == make_png(5, 1, 1) and store.get(5, 1, 2) is None


def test_killed_writer_leaves_old_bundle_and_stale_temp_is_cleaned(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    with open_store("compact", cache, web_mercator()) as store:
        store.put_many([(6, 2, 3, make_png(6, 2, 3))])
        bundle = store.bundle_path(6, 2, 3)
    before = bundle.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tiledelta.grid import web_mercator
        from tiledelta.stores import open_store

        def die(src, dst):
            os.kill(os.getpid(), signal.SIGKILL)  # crash between fsync and rename

        os.replace = die
        store = open_store("compact", Path({str(cache)!r}), web_mercator())
        store.put_many([(6, 2, 4, b"\\x89PNG" + b"x" * 5000)])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert bundle.read_bytes() == before
    stale = temp_files(tmp_path)
    assert len(stale) == 1 and stale[0].parent == bundle.parent
    # readers ignore it
    assert list(read_compact_cache(cache).iter_tiles()) == [(6, 2, 3)]
    # a writer cleans it up on open
    with open_store("compact", cache, web_mercator()) as store:
        assert temp_files(tmp_path) == []
        assert store.get(6, 2, 3) == make_png(6, 2, 3)


# --------------------------------------------------------------- scheme checks


def test_scheme_mismatch_raises(tmp_path: Path) -> None:
    path = tmp_path / "c"
    open_store("compact", path, web_mercator()).close()
    with pytest.raises(CacheError, match="different tiling scheme") as err:
        open_store("compact", path, state_plane())
    msg = str(err.value)
    assert str(path) in msg and "--cache" in msg and "delete" in msg and "\n" not in msg
    # same grid, fewer levels: fine
    open_store("compact", path, web_mercator(10)).close()


def test_compact_refuses_other_things(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="not a compact cache"):
        open_store("compact", tmp_path / "missing", web_mercator(), create=False)
    with pytest.raises(CacheError, match="not a compact cache"):
        read_compact_cache(tmp_path)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(CacheError, match="choose another --cache path"):
        open_store("compact", tmp_path / "f", web_mercator())
    open_store("xyz", tmp_path / "x", web_mercator()).close()
    with pytest.raises(CacheError, match="XYZ"):
        open_store("compact", tmp_path / "x", web_mercator())
