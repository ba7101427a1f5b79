"""Tests for tiledelta.schemes: tileInfo / root.json I/O, loading, level selection."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiledelta.errors import SchemeError
from tiledelta.grid import (
    Bounds,
    TilingScheme,
    crs_from_spatial_reference,
    grid_size,
    is_web_mercator,
    load_scheme,
    scheme_from_tile_info,
    scheme_inches_per_unit,
    scheme_meters_per_unit,
    scheme_to_root_json,
    scheme_to_tile_info,
    select_levels,
    tile_bounds,
    tile_range,
    web_mercator,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
USA_TPKX = SHARED / "data" / "esri_samples" / "tpkx" / "Usa.tpkx"
OREGON = REPO / "examples" / "schemes" / "oregon_north_2913.json"
FT = 0.3048
#: Clatsop County, EPSG:3857 (the example's fullExtent was projected from this).
CLATSOP_3857 = (-13801268.24, 5745708.99, -13732330.64, 5819597.82)

needs_shared = pytest.mark.skipif(
    not USA_TPKX.is_file(), reason=f"Esri sample data not present at {USA_TPKX}"
)


@pytest.fixture(scope="module")
def oregon() -> TilingScheme:
    return load_scheme("examples/schemes/oregon_north_2913.json", REPO)


def _usa_root() -> dict:
    with zipfile.ZipFile(USA_TPKX) as zf:
        return json.loads(zf.read("root.json"))


# ------------------------------------------------------------ Web Mercator


@pytest.mark.parametrize(
    ("level", "scale"),
    [(0, 591657527.591555), (9, 1155581.108577), (19, 1128.497176), (20, 564.248588)],
)
def test_web_mercator_scales_match_esri(level: int, scale: float) -> None:
    lod = web_mercator().lod(level)
    assert lod.scale == pytest.approx(scale, abs=1e-6)
    # ArcGIS: scale = resolution * dpi * 39.37 (not 1/0.0254 inches per metre)
    assert lod.resolution * 96 * 39.37 == pytest.approx(scale, rel=1e-9)
    assert scheme_inches_per_unit(web_mercator()) == 39.37


def test_web_mercator_level0() -> None:
    wm = web_mercator()
    assert wm.lod(0).resolution == pytest.approx(156543.033928, abs=1e-9)
    assert scheme_meters_per_unit(wm) == 1.0
    assert load_scheme("web-mercator", REPO) == wm


@needs_shared
def test_web_mercator_matches_usa_tpkx_lods() -> None:
    lods = _usa_root()["tileInfo"]["lods"]
    wm = web_mercator()
    for item in lods:
        lod = wm.lod(item["level"])
        assert lod.scale == pytest.approx(item["scale"], rel=1e-9)
        assert lod.resolution == pytest.approx(item["resolution"], rel=1e-9)


# ---------------------------------------------------------------- tileInfo


def test_tile_info_round_trip_web_mercator() -> None:
    wm = web_mercator()
    info = scheme_to_tile_info(wm)
    assert info["spatialReference"] == {"wkid": 102100, "latestWkid": 3857}
    assert (info["rows"], info["cols"], info["dpi"]) == (256, 256, 96)
    back = scheme_from_tile_info(json.loads(json.dumps(info)), name=wm.name, extent=wm.extent)
    assert back == wm


def test_tile_info_round_trip_oregon(oregon: TilingScheme) -> None:
    back = scheme_from_tile_info(
        scheme_to_tile_info(oregon), name=oregon.name, extent=oregon.extent
    )
    assert back == oregon


def test_tile_info_wkt_only() -> None:
    from pyproj import CRS

    wkt = CRS("EPSG:2913").to_wkt(version="WKT1_ESRI")
    info = scheme_to_tile_info(web_mercator(3))
    info["spatialReference"] = {"wkt": wkt}
    scheme = scheme_from_tile_info(info)
    assert scheme.wkid is None and scheme.crs == wkt
    assert scheme_meters_per_unit(scheme) == pytest.approx(FT)
    assert set(scheme_to_tile_info(scheme)["spatialReference"]) == {"wkt"}


@pytest.mark.parametrize("drop", ["resolution", "scale"])
def test_tile_info_lod_fills_missing_field(oregon: TilingScheme, drop: str) -> None:
    """A LOD with only a scale (or resolution) gets the other as ArcGIS computes it."""
    for scheme in (oregon, web_mercator()):
        info = scheme_to_tile_info(scheme)
        for lod in info["lods"]:
            del lod[drop]
        back = scheme_from_tile_info(info)
        for a, b in zip(back.lods, scheme.lods, strict=True):
            assert a.resolution == pytest.approx(b.resolution, rel=1e-9)
            assert a.scale == pytest.approx(b.scale, rel=1e-9)


def test_tile_info_errors() -> None:
    info = scheme_to_tile_info(web_mercator(2))
    with pytest.raises(SchemeError, match="lacks origin"):
        scheme_from_tile_info({k: v for k, v in info.items() if k != "origin"})
    with pytest.raises(SchemeError, match="origin.x must be a number"):
        scheme_from_tile_info({**info, "origin": {"x": "west", "y": 0}})
    with pytest.raises(SchemeError, match="no spatialReference"):
        scheme_from_tile_info({k: v for k, v in info.items() if k != "spatialReference"})
    with pytest.raises(SchemeError, match="lods must be a non-empty list"):
        scheme_from_tile_info({**info, "lods": []})


def test_mapserver_document_uses_full_extent() -> None:
    info = scheme_to_tile_info(web_mercator(5))
    doc = {
        "tileInfo": info,
        "fullExtent": {
            "xmin": 1,
            "ymin": 2,
            "xmax": 3,
            "ymax": 4,
            "spatialReference": {"wkid": 102100, "latestWkid": 3857},
        },
    }
    assert scheme_from_tile_info(doc).extent == Bounds(1, 2, 3, 4)
    # an extent in another CRS is reprojected into the scheme CRS
    doc["fullExtent"] = {
        "xmin": -124,
        "ymin": 45,
        "xmax": -123,
        "ymax": 46,
        "spatialReference": {"wkid": 4326},
    }
    ext = scheme_from_tile_info(doc).extent
    assert ext is not None
    assert ext.xmin == pytest.approx(-13803616.86, abs=1) and ext.ymax > ext.ymin > 5.6e6


# ------------------------------------------------------- spatialReference


def test_crs_from_spatial_reference() -> None:
    assert crs_from_spatial_reference({"wkid": 102100}) == ("EPSG:3857", 102100, 3857)
    assert crs_from_spatial_reference({"wkid": 102113})[0] == "EPSG:3857"
    assert crs_from_spatial_reference({"wkid": 2913, "latestWkid": 2913}) == (
        "EPSG:2913",
        2913,
        2913,
    )
    # Esri-only id whose latestWkid is an EPSG code (State Plane Oregon North ft, old id)
    assert crs_from_spatial_reference({"wkid": 102726, "latestWkid": 2269})[0] == "EPSG:2269"
    assert crs_from_spatial_reference({"wkid": 102726})[0] == "ESRI:102726"
    with pytest.raises(SchemeError, match="unknown spatial reference wkid 999999: give the CRS"):
        crs_from_spatial_reference({"wkid": 999999})
    with pytest.raises(SchemeError, match="neither a wkid nor a wkt"):
        crs_from_spatial_reference({})


def test_meters_per_unit_us_survey_feet() -> None:
    info = scheme_to_tile_info(web_mercator(1))
    info["spatialReference"] = {"wkid": 2926}  # NAD83(HARN) / Washington North (ftUS)
    scheme = scheme_from_tile_info(info)
    assert scheme_meters_per_unit(scheme) == pytest.approx(1200 / 3937, rel=1e-12)
    assert scheme_inches_per_unit(scheme) == 12.0


# ---------------------------------------------------------------- root.json


@needs_shared
def test_usa_tpkx_root_json_parses() -> None:
    scheme = load_scheme(str(USA_TPKX), REPO)
    assert scheme.name == "Usa"
    assert (scheme.wkid, scheme.latest_wkid, scheme.crs) == (102100, 3857, "EPSG:3857")
    assert is_web_mercator(scheme) and scheme.levels == list(range(24))
    root = _usa_root()
    full = root["fullExtent"]
    assert scheme.extent == Bounds(full["xmin"], full["ymin"], full["xmax"], full["ymax"])
    assert scheme_from_tile_info(root).same_grid(web_mercator())


@needs_shared
def test_root_json_has_usa_shape() -> None:
    usa = _usa_root()
    ours = scheme_to_root_json(
        web_mercator(),
        name="Usa",
        fmt="png",
        min_level=0,
        max_level=5,
        extent=Bounds(-2e7, -1e7, 2e7, 1e7),
    )
    for key in ("name", "version", "tileBundlesPath", "minLOD", "maxLOD", "storageInfo"):
        assert ours[key] == usa[key], key
    # Usa's maxScale is a layer visibility limit (LOD 16); ours is the scale of maxLOD
    assert ours["minScale"] == pytest.approx(usa["minScale"])
    assert ours["maxScale"] == pytest.approx(usa["tileInfo"]["lods"][5]["scale"])
    assert set(usa["tileInfo"]) >= set(ours["tileInfo"])
    assert ours["tileImageInfo"]["format"] == "PNG"
    assert ours["tileImageInfo"]["compressionQuality"] == 0


def test_root_json_round_trip(oregon: TilingScheme) -> None:
    root = scheme_to_root_json(oregon, name="clatsop", fmt="JPEG", quality=80)
    assert root["tileImageInfo"] == {
        "format": "JPEG",
        "compressionQuality": 80,
        "antialiasing": True,
    }
    assert root["units"] == "esriFeet"
    assert (root["minLOD"], root["maxLOD"]) == (0, 11)
    assert (root["minScale"], root["maxScale"]) == (1600000, 600)
    assert root["storageInfo"] == {
        "storageFormat": "esriMapCacheStorageModeCompactV2",
        "packetSize": 128,
    }
    back = scheme_from_tile_info(json.loads(json.dumps(root)), name=oregon.name)
    assert back == oregon


def test_root_json_errors(oregon: TilingScheme) -> None:
    with pytest.raises(SchemeError, match="tile format 'GIF'"):
        scheme_to_root_json(oregon, name="x", fmt="GIF")
    with pytest.raises(SchemeError, match="has no extent"):
        scheme_to_root_json(oregon.model_copy(update={"extent": None}), name="x")


def test_load_tpkx_and_root_json(tmp_path: Path) -> None:
    root = scheme_to_root_json(web_mercator(), name="tiny", extent=Bounds(0, 0, 10, 10))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "root.json").write_text(json.dumps(root))
    with zipfile.ZipFile(tmp_path / "tiny.tpkx", "w") as zf:
        zf.writestr("root.json", json.dumps(root))
    for spec in ("cache/root.json", "cache", "tiny.tpkx"):
        scheme = load_scheme(spec, tmp_path)
        assert scheme.name == "tiny" and is_web_mercator(scheme)
        assert scheme.extent == Bounds(0, 0, 10, 10)


# -------------------------------------------------------------- load errors


def test_load_scheme_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemeError, match=r"nope\.json not found: give 'web-mercator'"):
        load_scheme("nope.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SchemeError, match=r"bad\.json is not valid JSON \(line 1"):
        load_scheme("bad.json", tmp_path)
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SchemeError, match=r"empty\.json: tileInfo lacks"):
        load_scheme("empty.json", tmp_path)
    (tmp_path / "fake.tpkx").write_bytes(b"not a zip")
    with pytest.raises(SchemeError, match="not a tile package"):
        load_scheme("fake.tpkx", tmp_path)
    with zipfile.ZipFile(tmp_path / "noroot.tpkx", "w") as zf:
        zf.writestr("iteminfo.json", "{}")
    with pytest.raises(SchemeError, match="holds no root.json"):
        load_scheme("noroot.tpkx", tmp_path)
    (tmp_path / "scheme.txt").write_text("x")
    with pytest.raises(SchemeError, match="unknown file type"):
        load_scheme("scheme.txt", tmp_path)
    for msg in (str(e) for e in _errors(tmp_path)):
        assert "\n" not in msg


def _errors(tmp_path: Path) -> list[SchemeError]:
    out = []
    for spec in ("nope.json", "bad.json", "empty.json", "fake.tpkx", "noroot.tpkx"):
        try:
            load_scheme(spec, tmp_path)
        except SchemeError as exc:
            out.append(exc)
    return out


@needs_shared
def test_load_conf_xml() -> None:
    cache = SHARED / "data" / "esri_samples" / "compact_cache_v2"
    scheme = load_scheme(str(cache / "conf.xml"), REPO)
    assert is_web_mercator(scheme)
    assert load_scheme(str(cache), REPO).same_grid(scheme)


def test_load_bad_conf_xml(tmp_path: Path) -> None:
    (tmp_path / "conf.xml").write_text("<NotACache/>")
    with pytest.raises(SchemeError, match="conf.xml"):
        load_scheme("conf.xml", tmp_path)


# ------------------------------------------------------- Oregon North (ft)


def test_oregon_example(oregon: TilingScheme) -> None:
    from pyproj import Transformer

    assert oregon.name == "oregon_north_2913"
    assert (oregon.crs, oregon.wkid) == ("EPSG:2913", 2913)
    assert scheme_meters_per_unit(oregon) == pytest.approx(FT)
    assert len(oregon.levels) == 12
    for lod in oregon.lods:
        assert lod.resolution == pytest.approx(lod.scale / 96 * 0.0254 / FT, rel=1e-12)
        assert lod.resolution * 96 * scheme_inches_per_unit(oregon) == pytest.approx(lod.scale)
    # 1:24000 at 96 dpi is 20.83 ft per pixel
    assert oregon.lod(6).resolution == pytest.approx(20.8333, abs=1e-4)
    # the extent is Clatsop County (projected from Web Mercator)
    tr = Transformer.from_crs("EPSG:3857", "EPSG:2913", always_xy=True)
    want = tr.transform_bounds(*CLATSOP_3857, densify_pts=21)
    assert oregon.extent is not None
    for got, exp in zip(oregon.extent, want, strict=True):
        assert got == pytest.approx(exp, abs=2)
    # origin is north-west of the county
    assert oregon.origin_x < oregon.extent.xmin and oregon.origin_y > oregon.extent.ymax


# ------------------------------------------------------------ select_levels


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("0-19", list(range(20))),
        ("9-19", list(range(9, 20))),
        ("5", [5]),
        ("0-3,7,9-10", [0, 1, 2, 3, 7, 9, 10]),
        (" 3 - 4 , 2 ", [2, 3, 4]),
        ("4,4,3-4", [3, 4]),
        (None, list(range(24))),
        ("all", list(range(24))),
    ],
)
def test_select_levels(spec: str | None, want: list[int]) -> None:
    assert select_levels(web_mercator(), spec) == want


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("20-25", r"^levels 20-25 are outside the scheme web-mercator \(levels 0-19\)$"),
        ("3,21", r"^level 21 is outside the scheme web-mercator \(levels 0-19\)$"),
        ("5-3", "write it low-high"),
        ("a-b", "bad level list"),
        ("1,,2", "bad level list"),
        ("-1", "bad level list"),
    ],
)
def test_select_levels_errors(spec: str, match: str) -> None:
    with pytest.raises(SchemeError, match=match):
        select_levels(web_mercator(19), spec)


def test_select_levels_gappy_scheme() -> None:
    scheme = web_mercator(10).model_copy(
        update={"lods": tuple(lod for lod in web_mercator(10).lods if lod.level != 5)}
    )
    with pytest.raises(SchemeError, match=r"\(levels 0-4,6-10\)"):
        select_levels(scheme, "4-6")


# ------------------------------------------------------ tile math property


def _schemes() -> list[TilingScheme]:
    return [web_mercator(), load_scheme("examples/schemes/oregon_north_2913.json", REPO)]


SCHEMES = _schemes()


@st.composite
def _tile_and_point(draw: st.DrawFn) -> tuple[TilingScheme, int, int, int, float, float]:
    scheme = draw(st.sampled_from(SCHEMES))
    level = draw(st.sampled_from(scheme.levels))
    assert scheme.extent is not None
    rng = tile_range(scheme, level, scheme.extent, touch=False)
    assert rng is not None
    row = draw(st.integers(rng[0], rng[1]))
    col = draw(st.integers(rng[2], rng[3]))
    u = draw(st.floats(0.001, 0.999))
    v = draw(st.floats(0.001, 0.999))
    return scheme, level, row, col, u, v


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_tile_and_point())
def test_point_in_tile_maps_back(case: tuple[TilingScheme, int, int, int, float, float]) -> None:
    scheme, level, row, col, u, v = case
    b = tile_bounds(scheme, level, row, col)
    x = b.xmin + u * (b.xmax - b.xmin)
    y = b.ymax - v * (b.ymax - b.ymin)
    assert tile_range(scheme, level, Bounds(x, y, x, y), touch=False) == (row, row, col, col)
    assert tile_range(scheme, level, Bounds(x, y, x, y)) == (row, row, col, col)
    size = grid_size(scheme, level)
    assert size is not None and row < size[0] and col < size[1]


@settings(max_examples=300)
@given(
    st.sampled_from(SCHEMES).flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.sampled_from(s.levels),
            st.floats(0, 1),
            st.floats(0, 1),
            st.floats(0, 1),
            st.floats(0, 1),
        )
    )
)
def test_tile_range_covers_box(case: tuple[TilingScheme, int, float, float, float, float]) -> None:
    scheme, level, a, b, c, d = case
    assert scheme.extent is not None
    # stay 1 ppm inside the extent: grid.tile_range returns None for a zero-height box
    # lying exactly on the bottom edge of the Web Mercator world (Esri's rounded
    # LOD 0 resolution makes 256 px * res differ from the world size by 6e-6 m).
    e = scheme.extent
    m = 1e-6 * (e.xmax - e.xmin)
    ext = Bounds(e.xmin + m, e.ymin + m, e.xmax - m, e.ymax - m)
    xs = sorted(ext.xmin + t * (ext.xmax - ext.xmin) for t in (a, b))
    ys = sorted(ext.ymin + t * (ext.ymax - ext.ymin) for t in (c, d))
    box = Bounds(xs[0], ys[0], xs[1], ys[1])
    rng = tile_range(scheme, level, box)
    assert rng is not None
    r0, r1, c0, c1 = rng
    tol = 1e-9 * max(abs(scheme.origin_x), abs(scheme.origin_y))
    # the corner tiles of the range meet the box (edges count) ...
    for r, c in ((r0, c0), (r1, c1)):
        tb = tile_bounds(scheme, level, r, c)
        assert tb.xmin <= box.xmax + tol and tb.xmax >= box.xmin - tol
        assert tb.ymin <= box.ymax + tol and tb.ymax >= box.ymin - tol
    # ... and together the tiles cover it
    top_left = tile_bounds(scheme, level, r0, c0)
    bottom_right = tile_bounds(scheme, level, r1, c1)
    assert top_left.xmin <= box.xmin + tol and top_left.ymax >= box.ymax - tol
    assert bottom_right.xmax >= box.xmax - tol and bottom_right.ymin <= box.ymin + tol
