"""``tiledelta serve`` against a real uvicorn server on 127.0.0.1, read by independent clients
(GDAL's WMS driver, owslib, httpx, raw http.client), for compact, MBTiles, XYZ and State Plane.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer as ServerThread
from conftest import set_processes
from owslib.wmts import WebMapTileService
from PIL import Image

from tiledelta.api import init_project, load_project, seed
from tiledelta.errors import CacheError
from tiledelta.project import Project
from tiledelta.serve.app import create_app
from tiledelta.stores import open_project_store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STATE_PLANE = EXAMPLES / "schemes" / "oregon_north_2913.json"


# ------------------------------------------------------------------------------ fixtures


def _make_project(
    template: Path, root: Path, *, levels: str, cache_kind: str = "compact", **kw
) -> Project:
    shutil.copytree(template, root)
    init_project(
        root, style=root / "style.xml", levels=levels, cache_kind=cache_kind, force=True, **kw
    )
    set_processes(root, 1)
    seed(load_project(root))
    return Project.load(root)


class LiveServer(ServerThread):
    """The project's tile server, live on 127.0.0.1."""

    def __init__(self, project: Project, **kw) -> None:
        self.project = project
        self.name = project.root.name
        super().__init__(create_app(project, **kw))

    @property
    def mapserver(self) -> str:
        return f"{self.base}/arcgis/rest/services/{self.name}/MapServer"


def stored_tiles(project: Project) -> dict[tuple[int, int, int], bytes]:
    with open_project_store(project, create=False) as store:
        return {addr: store.get(*addr) for addr in store.iter_tiles()}


@pytest.fixture(scope="module")
def projects(sample_template: Path, tmp_path_factory) -> dict[str, Project]:
    base = tmp_path_factory.mktemp("serve")
    return {
        "compact": _make_project(sample_template, base / "county", levels="13-16"),
        "mbtiles": _make_project(
            sample_template, base / "county_mb", levels="13-16", cache_kind="mbtiles", fmt="jpeg"
        ),
        "xyz": _make_project(
            sample_template, base / "county_xyz", levels="13-16", cache_kind="xyz"
        ),
        "stateplane": _make_project(
            sample_template, base / "county_sp", levels="6-9", scheme=str(STATE_PLANE)
        ),
    }


@pytest.fixture(scope="module")
def compact(projects) -> Iterator[LiveServer]:
    with LiveServer(projects["compact"], max_age=123) as srv:
        yield srv


# -------------------------------------------------------------------- ArcGIS REST face


def test_arcgis_catalog_and_mapserver_json(compact: LiveServer) -> None:
    project = compact.project
    cat = httpx.get(f"{compact.base}/arcgis/rest/services?f=json").json()
    assert cat["services"] == [{"name": "county", "type": "MapServer"}]
    r = httpx.get(compact.mapserver, params={"f": "pjson"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert "\n  " in r.text  # pretty
    doc = r.json()
    info = doc["tileInfo"]
    assert info["spatialReference"] == {"wkid": 102100, "latestWkid": 3857}
    assert info["format"] == "PNG32"
    assert [lod["level"] for lod in info["lods"]] == list(range(17))
    assert doc["singleFusedMapCache"] is True
    assert doc["capabilities"] == "Map"
    assert doc["units"] == "esriMeters"
    assert doc["minScale"] == pytest.approx(project.scheme.lod(13).scale)
    assert doc["maxScale"] == pytest.approx(project.scheme.lod(16).scale)
    with open_project_store(project, create=False) as store:
        cdi = store.read_extent()
    full = doc["fullExtent"]
    assert [full[k] for k in ("xmin", "ymin", "xmax", "ymax")] == pytest.approx(list(cdi))
    assert doc["initialExtent"] == full
    assert isinstance(doc["currentVersion"], float)
    assert httpx.get(f"{compact.base}/arcgis/rest/services/other/MapServer?f=json").status_code == (
        404
    )


def test_arcgis_tiles_are_the_stored_bytes(compact: LiveServer) -> None:
    tiles = stored_tiles(compact.project)
    assert tiles
    with httpx.Client(base_url=compact.mapserver) as client:
        for (lv, row, col), data in tiles.items():
            r = client.get(f"/tile/{lv}/{row}/{col}")
            assert r.status_code == 200
            assert r.content == data
            assert r.headers["content-type"] == "image/png"
            x = client.get(f"/tiles/{lv}/{col}/{row}.png", params=None)  # not under MapServer
            assert x.status_code == 404


GDAL_READ = """
import json, sys
import numpy as np
import rasterio
from rasterio.windows import Window

url, cache, out, windows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
arrays = {}
with rasterio.Env(GDAL_DEFAULT_WMS_CACHE_PATH=cache), rasterio.open(url) as ds:
    info = {"driver": ds.driver, "epsg": ds.crs.to_epsg(), "width": ds.width, "count": ds.count,
            "transform": list(ds.transform)[:6]}
    for i, (col_off, row_off, size, out_size) in enumerate(windows):
        arrays[str(i)] = ds.read(window=Window(col_off, row_off, size, size),
                                 out_shape=(ds.count, out_size, out_size))
np.savez(out, **arrays)
print(json.dumps(info))
"""


def gdal_read(url: str, tmp_path: Path, windows: list) -> tuple[dict, dict]:
    """Read windows with GDAL in a clean interpreter (mapnik's PROJ_LIB must not leak into
    GDAL, as in test_package). ``WMS:`` keeps rasterio from rewriting the URL to /vsicurl/;
    GDAL's WMS driver then recognises ``.../MapServer?f=json`` and builds a TMS from tileInfo.
    """
    out = tmp_path / "gdal.npz"
    # mapnik's import points PROJ_LIB / GDAL_DATA at its own copies; GDAL needs its own.
    env = {k: v for k, v in os.environ.items() if "mapnik" not in v}
    run = subprocess.run(
        [sys.executable, "-c", GDAL_READ, f"WMS:{url}", str(tmp_path / "wmscache"), str(out),
         json.dumps(windows)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with np.load(out) as z:
        return json.loads(run.stdout), {int(k): z[k] for k in z.files}


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_gdal_reads_the_mapserver_through_its_wms_driver(compact: LiveServer, tmp_path) -> None:
    tiles = stored_tiles(compact.project)
    full = [a for a in tiles if a[0] == 16][:4]
    over = next(a for a in tiles if a[0] == 15)
    windows = [(col * 256, row * 256, 256, 256) for _lv, row, col in full]
    # A level-15 tile through GDAL's overview (2x decimation of level 16).
    windows.append((over[2] * 512, over[1] * 512, 512, 256))
    info, got = gdal_read(f"{compact.mapserver}?f=json", tmp_path, windows)
    assert info["driver"] == "WMS" and info["epsg"] == 3857
    assert info["width"] == 256 * 2**16  # level 16 is the full resolution
    res = compact.project.scheme.resolution(16)
    assert info["transform"] == pytest.approx([res, 0, -20037508.342787, 0, -res, 20037508.342787])
    for i, addr in enumerate([*full, over]):
        want = decode(tiles[addr])
        assert got[i].shape == (info["count"], 256, 256)
        assert np.array_equal(np.moveaxis(got[i], 0, -1), want[..., : info["count"]]), addr


def test_state_plane_mapserver(projects) -> None:
    project = projects["stateplane"]
    tiles = stored_tiles(project)
    assert tiles
    with LiveServer(project) as srv:
        doc = httpx.get(srv.mapserver, params={"f": "json"}).json()
        assert doc["tileInfo"]["spatialReference"]["wkid"] == 2913
        assert doc["spatialReference"]["wkid"] == 2913
        assert doc["units"] == "esriFeet"
        assert [lod["level"] for lod in doc["tileInfo"]["lods"]] == list(range(10))
        assert doc["tileInfo"]["origin"] == {"x": -117104300.0, "y": 136876000.0}
        assert 7_000_000 < doc["fullExtent"]["xmin"] < doc["fullExtent"]["xmax"] < 7_600_000
        with httpx.Client(base_url=srv.mapserver) as client:
            for (lv, row, col), data in tiles.items():
                assert client.get(f"/tile/{lv}/{row}/{col}").content == data
        # XYZ needs Web Mercator: a JSON message, not a tile.
        lv, row, col = next(iter(tiles))
        r = httpx.get(f"{srv.base}/tiles/{lv}/{col}/{row}.png")
        assert r.status_code == 404
        assert "Web Mercator" in r.json()["error"]["message"]
        # WMTS for the State Plane grid: feet, east/north axis order, scale from 0.28 mm.
        wmts = WebMapTileService(f"{srv.base}/wmts")
        tms = wmts.tilematrixsets["default028mm"]
        assert tms.crs == "urn:ogc:def:crs:EPSG::2913"
        tm = tms.tilematrix["9"]
        assert tm.topleftcorner == (-117104300.0, 136876000.0)
        res = project.scheme.resolution(9)
        assert tm.scaledenominator == pytest.approx(res * 0.3048 / 0.00028)
        for lv9, row9, col9 in [a for a in tiles if a[0] == 9][:3]:
            img = wmts.gettile(
                layer="county_sp", tilematrixset="default028mm", tilematrix="9", row=row9,
                column=col9,
            )  # fmt: skip
            assert img.read() == tiles[(lv9, row9, col9)]


# ---------------------------------------------------------------------------------- WMTS


def test_wmts_capabilities_and_gettile_with_owslib(compact: LiveServer) -> None:
    tiles = stored_tiles(compact.project)
    for url in (f"{compact.base}/wmts", f"{compact.base}/wmts/1.0.0/WMTSCapabilities.xml"):
        wmts = WebMapTileService(url)
        assert wmts.identification.type == "OGC WMTS"
        assert list(wmts.contents) == ["county"]
        layer = wmts["county"]
        assert layer.formats == ["image/png"]
        assert "default028mm" in layer.tilematrixsetlinks
        lon0, lat0, lon1, lat1 = layer.boundingBoxWGS84
        assert -124.1 < lon0 < lon1 < -123.5 and 45.9 < lat0 < lat1 < 46.4
        tms = wmts.tilematrixsets["default028mm"]
        assert tms.crs == "urn:ogc:def:crs:EPSG::3857"
        assert sorted(tms.tilematrix, key=int) == ["13", "14", "15", "16"]
        tm = tms.tilematrix["16"]
        assert tm.topleftcorner == pytest.approx((-20037508.342787, 20037508.342787))
        assert (tm.matrixwidth, tm.matrixheight) == (2**16, 2**16)
        assert tm.scaledenominator == pytest.approx(compact.project.scheme.resolution(16) / 0.00028)
        limits = layer.tilematrixsetlinks["default028mm"].tilematrixlimits
        for lv, row, col in tiles:
            lim = limits[str(lv)]
            assert lim.mintilerow <= row <= lim.maxtilerow
            assert lim.mintilecol <= col <= lim.maxtilecol
    for (lv, row, col), data in list(tiles.items())[:10]:
        kvp = wmts.gettile(
            layer="county", tilematrixset="default028mm", tilematrix=str(lv), row=row, column=col
        )
        assert kvp.read() == data
        rest = wmts.buildTileResource(
            layer="county", tilematrixset="default028mm", tilematrix=str(lv), row=row, column=col
        )
        assert rest.startswith(f"{compact.base}/wmts/1.0.0/county/default/default028mm/")
        assert httpx.get(rest).content == data


def test_wmts_errors_are_ows_exception_reports(compact: LiveServer) -> None:
    base = f"{compact.base}/wmts"
    r = httpx.get(base, params={"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "county"})
    assert r.status_code == 400 and b"MissingParameterValue" in r.content
    q = {"SERVICE": "WMTS", "REQUEST": "GetTile", "LAYER": "county", "STYLE": "default",
         "TILEMATRIXSET": "default028mm", "TILEMATRIX": "16", "TILEROW": "x",
         "TILECOL": "1"}  # fmt: skip
    r = httpx.get(base, params=q)
    assert r.status_code == 400 and b"InvalidParameterValue" in r.content
    r = httpx.get(base, params={**q, "TILEROW": "0", "TILEMATRIX": "12"})
    assert r.status_code == 404 and b"TileOutOfRange" in r.content
    r = httpx.get(base, params={**q, "TILEROW": "0", "TILECOL": str(2**16)})
    assert r.status_code == 404
    r = httpx.get(base, params={**q, "TILEROW": "0", "TILECOL": "0"})  # in range, not stored
    assert r.status_code == 404
    r = httpx.get(base, params={"SERVICE": "WMTS", "REQUEST": "GetFeatureInfo"})
    assert r.status_code == 400 and b"OperationNotSupported" in r.content


# ------------------------------------------------------------------------- HTTP semantics


def test_headers_etag_304_and_missing_tiles(compact: LiveServer) -> None:
    tiles = stored_tiles(compact.project)
    (lv, row, col), data = next(iter(tiles.items()))
    url = f"{compact.base}/tiles/{lv}/{col}/{row}.png"
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "public, max-age=123"
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert r.headers["last-modified"].endswith("GMT")
    r2 = httpx.get(url, headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    assert r2.headers["etag"] == etag
    assert httpx.get(url, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    ims = httpx.get(url, headers={"If-Modified-Since": r.headers["last-modified"]})
    assert ims.status_code == 304
    assert httpx.get(url, headers={"If-Modified-Since": "garbage"}).status_code == 200
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag
    # Same tile over the ArcGIS and XYZ faces: same ETag.
    assert httpx.get(f"{compact.mapserver}/tile/{lv}/{row}/{col}").headers["etag"] == etag
    # CORS for browser clients on other origins.
    cors = httpx.get(url, headers={"Origin": "http://example.org"})
    assert cors.headers["access-control-allow-origin"] == "*"
    # Missing (in range, not stored) and out of range: 404, JSON body.
    for path in (
        f"/tiles/{lv}/0/0.png",
        f"/tiles/{lv}/{2**lv}/0.png",
        "/tiles/17/0/0.png",
        "/tiles/12/0/0.png",
        f"/arcgis/rest/services/county/MapServer/tile/{lv}/0/0",
        f"/arcgis/rest/services/county/MapServer/tile/{lv}/{2**lv}/{col}",
    ):
        r = httpx.get(compact.base + path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json")


def test_index_page_and_service_json(compact: LiveServer) -> None:
    r = httpx.get(compact.base + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/arcgis/rest/services/county/MapServer" in r.text
    assert "/wmts/1.0.0/WMTSCapabilities.xml" in r.text
    info = httpx.get(compact.base + "/service.json").json()
    assert info["name"] == "county" and info["levels"] == [13, 14, 15, 16]
    assert info["urls"]["xyz"].endswith("/tiles/{z}/{x}/{y}.png")


# ------------------------------------------------------------------------------- security

BAD_PATHS = [
    "/tiles/../../etc/passwd",
    "/tiles/%2e%2e/%2e%2e/etc/passwd",
    "/tiles/%2e%2e%2f%2e%2e%2fetc/x/passwd",
    "/tiles/16/..%2f..%2f..%2fetc/passwd",
    "/tiles/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/arcgis/rest/services/../../x",
    "/arcgis/rest/services/%2e%2e/%2e%2e/etc/MapServer?f=json",
    "/arcgis/rest/services/county/MapServer/tile/../../../../etc/passwd",
    "/arcgis/rest/services/county/MapServer/tile/16/%2e%2e/passwd",
    "/wmts/1.0.0/county/default/default028mm/16/..%2f..%2fetc/passwd",
    "/wmts/1.0.0/WMTSCapabilities.xml/../../../etc/passwd",
    "/tiles/99999999999999999999999/1/1.png",
    "/tiles/16/99999999999/1.png",
    "/tiles/16/1/99999999999999999999.png",
    "/tiles/-1/0/0.png",
    "/tiles/16/-5/3.png",
    "/tiles/16/1e3/2.png",
    "/tiles/16/0x10/2.png",
    "/tiles/16/+1/2.png",
    "/tiles/16/%EF%BC%91/2.png",  # fullwidth digit one
    "/tiles/16/%D9%A1/2.png",  # Arabic-Indic digit one
    "/tiles/16/1/2.png%00.png",
    "/tiles/16/1/2.gif",
    "/arcgis/rest/services/county/MapServer/tile/16/-1/0",
    "/arcgis/rest/services/county/MapServer/tile/16/1.5/0",
    "/arcgis/rest/services/county/MapServer/tile/99999999999999999999/0/0",
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=county&TILEMATRIXSET=default028mm"
    "&TILEMATRIX=../../etc&TILEROW=0&TILECOL=0",
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=county&TILEMATRIXSET=default028mm"
    "&TILEMATRIX=16&TILEROW=-1&TILECOL=99999999999999999999",
]


def test_path_traversal_and_bad_numbers_are_refused(compact: LiveServer) -> None:
    for path in BAD_PATHS:
        status, body = compact.raw(path)
        assert 400 <= status < 500, (path, status)
        assert b"root:" not in body, path


def test_xyz_symlinks_out_of_the_cache_are_refused(projects, tmp_path) -> None:
    root = tmp_path / "county_xyz"
    shutil.copytree(projects["xyz"].root, root)
    project = Project.load(root)
    tiles = stored_tiles(project)
    (lv, row, col), data = next(iter(tiles.items()))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0.png").write_bytes(data)  # a real PNG, but not in the cache
    cache = project.cache_path
    # 1. a tile file symlinked to /etc/passwd (or any file outside)
    target = Path("/etc/passwd") if Path("/etc/passwd").exists() else outside / "0.png"
    (cache / "16" / "0").mkdir(parents=True, exist_ok=True)
    (cache / "16" / "0" / "1.png").symlink_to(target)
    # 2. a column folder symlinked outside
    (cache / "16" / "5").symlink_to(outside, target_is_directory=True)
    # 3. an existing tile replaced by a symlink outside
    tile_file = cache / str(lv) / str(col) / f"{row}.png"
    tile_file.unlink()
    tile_file.symlink_to(outside / "0.png")
    # 4. a symlink inside the cache is fine
    other = next(a for a in tiles if a != (lv, row, col))
    inside = cache / "15" / "7"
    inside.mkdir(parents=True, exist_ok=True)
    (inside / "3.png").symlink_to(cache / str(other[0]) / str(other[2]) / f"{other[1]}.png")
    with LiveServer(project) as srv:
        for path in (
            "/tiles/16/0/1.png",
            "/tiles/16/5/0.png",
            f"/tiles/{lv}/{col}/{row}.png",
            f"/arcgis/rest/services/county_xyz/MapServer/tile/{lv}/{row}/{col}",
            "/arcgis/rest/services/county_xyz/MapServer/tile/16/1/0",
        ):
            status, body = srv.raw(path)
            assert status == 404, path
            assert b"root:" not in body and data not in body, path
        status, body = srv.raw("/tiles/15/7/3.png")
        assert status == 200 and body == tiles[other]


# ---------------------------------------------------------------------- MBTiles and XYZ


@pytest.mark.parametrize("kind", ["mbtiles", "xyz"])
def test_mbtiles_and_xyz_caches_are_served(projects, kind: str) -> None:
    project = projects[kind]
    tiles = stored_tiles(project)
    assert tiles
    mime = "image/jpeg" if kind == "mbtiles" else "image/png"
    ext = "jpg" if kind == "mbtiles" else "png"
    with LiveServer(project) as srv:
        doc = httpx.get(srv.mapserver, params={"f": "json"}).json()
        assert doc["tileInfo"]["format"] == ("JPEG" if kind == "mbtiles" else "PNG32")
        ext_keys = ("xmin", "ymin", "xmax", "ymax")
        full = [doc["fullExtent"][k] for k in ext_keys]
        assert -13_900_000 < full[0] < full[2] < -13_700_000  # the stored tiles, not the world
        with httpx.Client(base_url=srv.base) as client:
            for (lv, row, col), data in tiles.items():
                r = client.get(f"/tiles/{lv}/{col}/{row}.{ext}")
                assert r.status_code == 200 and r.content == data
                assert r.headers["content-type"] == mime
                a = client.get(f"/arcgis/rest/services/{srv.name}/MapServer/tile/{lv}/{row}/{col}")
                assert a.content == data
            assert client.get("/tiles/16/0/0.png").status_code == 404


# ---------------------------------------------------------------------------------- load


def test_2000_requests_from_20_clients(compact: LiveServer) -> None:
    tiles = stored_tiles(compact.project)
    addrs = sorted(tiles)
    missing = [(16, 0, 0), (15, 1, 1)]
    n_clients, per_client = 20, 100
    failures: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker(seed_: int) -> None:
        rnd = random.Random(seed_)
        with httpx.Client(base_url=compact.base, timeout=10) as client:
            for i in range(per_client):
                lv, row, col = addr = rnd.choice(addrs + missing)
                face = i % 3
                if face == 0:
                    path = f"/tiles/{lv}/{col}/{row}.png"
                elif face == 1:
                    path = f"/arcgis/rest/services/county/MapServer/tile/{lv}/{row}/{col}"
                else:
                    path = f"/wmts/1.0.0/county/default/default028mm/{lv}/{row}/{col}.png"
                try:
                    r = client.get(path)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{path}: {exc!r}")
                    continue
                want = tiles.get(addr)
                ok = (r.status_code == 200 and r.content == want) if want else r.status_code == 404
                with lock:
                    done[0] += 1
                    if not ok:
                        failures.append(f"{path}: {r.status_code}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert done[0] == n_clients * per_client
    assert elapsed < 30, elapsed


def test_missing_cache_is_a_clear_error(sample_template: Path, tmp_path) -> None:
    root = tmp_path / "empty"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="13-14", force=True)
    with pytest.raises(CacheError, match="no cache yet"):
        create_app(Project.load(root))


def test_mbtiles_file_swapped_in_by_a_new_build_is_picked_up(projects, tmp_path) -> None:
    root = tmp_path / "county_mb"
    shutil.copytree(projects["mbtiles"].root, root)
    project = Project.load(root)
    tiles = stored_tiles(project)
    (lv, row, col), data = next(iter(tiles.items()))
    url = f"/tiles/{lv}/{col}/{row}.jpg"
    with LiveServer(project) as srv, httpx.Client(base_url=srv.base) as client:
        assert client.get(url).content == data
        new = project.cache_path.with_name("new.mbtiles")
        shutil.copyfile(project.cache_path, new)
        with contextlib.closing(sqlite3.connect(new)) as db, db:
            db.execute(
                "DELETE FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (lv, col, (1 << lv) - 1 - row),
            )
        new.replace(project.cache_path)  # as seed's swap does: a new file, a new inode
        assert client.get(url).status_code == 404
        other = next(a for a in tiles if a != (lv, row, col))
        assert client.get(f"/tiles/{other[0]}/{other[2]}/{other[1]}.jpg").content == tiles[other]
