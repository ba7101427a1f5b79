"""The ArcGIS Server emulator over real HTTP on 127.0.0.1: tokens, publishing, tiles,
cache jobs that really re-render with Mapnik, and injected faults."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pyogrio.raw
import pytest
import shapely
from shapely.geometry import Polygon, box
from support.emulator import Emulator, Faults, make_service_definition

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.grid import tile_bounds, web_mercator
from tiledelta.grid.tiles import WEB_MERCATOR_SCALE_0
from tiledelta.project import Project
from tiledelta.stores import read_compact_cache

USER, PASSWORD = "publisher", "pa55-W0rd!x"
REFERER = "http://tiledelta.test/app"
PUBLISH = "rest/services/System/PublishingTools/GPServer/Publish Service Definition"
CACHE = "rest/services/System/CachingControllers/GPServer/Manage Map Cache Tiles"
CACHE_OLD = "rest/services/System/CachingTools/GPServer/Manage Map Cache Tiles"
REPORT = "rest/services/System/ReportingTools/GPServer/ReportCacheStatus"
STATS = "admin/services/System/CachingTools.GPServer/statistics"
WM = {"wkid": 102100, "latestWkid": 3857}


def scale(level: int) -> float:
    return WEB_MERCATOR_SCALE_0 / 2**level


# ------------------------------------------------------------------------------- HTTP


def http(url: str, *, data: bytes | None = None, headers: dict | None = None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Client:
    """Just enough of a client: form posts, token in a header (or a parameter), Referer sent."""

    def __init__(self, emu: Emulator, via: str = "header", referer: str | None = REFERER):
        self.emu, self.via, self.referer = emu, via, referer
        self.token: str | None = None

    def login(self, password: str = PASSWORD, **extra) -> dict:
        form = {
            "username": USER,
            "password": password,
            "client": "referer",
            "referer": REFERER,
            "expiration": "60",
            "f": "json",
            **extra,
        }
        body = self.post("tokens/generateToken", auth=False, **form)
        self.token = body.get("token")
        return body

    def _prepare(self, params: dict, auth: bool) -> tuple[dict, dict]:
        headers = {"Referer": self.referer} if self.referer else {}
        params = {"f": "json", **params}
        if auth and self.token:
            if self.via == "header":
                headers["X-Esri-Authorization"] = f"Bearer {self.token}"
            else:
                params["token"] = self.token
        return params, headers

    def url(self, path: str) -> str:
        return f"{self.emu.url}/{urllib.parse.quote(path)}"

    def get(self, path: str, auth: bool = True, **params) -> dict:
        params, headers = self._prepare(params, auth)
        status, _h, body = http(
            f"{self.url(path)}?{urllib.parse.urlencode(params)}", headers=headers
        )
        assert status == 200, (status, body[:200])
        return json.loads(body)

    def post(self, path: str, auth: bool = True, **params) -> dict:
        params, headers = self._prepare(params, auth)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = urllib.parse.urlencode(params).encode()
        status, _h, body = http(self.url(path), data=data, headers=headers)
        assert status == 200, (status, body[:200])
        return json.loads(body)

    def upload(self, path: Path) -> dict:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\njson\r\n'.encode(),
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="itemFile"; '
                f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + path.read_bytes()
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        _p, headers = self._prepare({}, True)
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        status, _h, body = http(
            self.url("admin/uploads/upload"), data=b"".join(parts), headers=headers
        )
        assert status == 200, status
        return json.loads(body)

    def tile(self, service: str, level: int, row: int, col: int):
        _p, headers = self._prepare({}, True)
        return http(
            self.url(f"rest/services/{service}/MapServer/tile/{level}/{row}/{col}"), headers=headers
        )

    def wait(self, task: str, job_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.get(f"{task}/jobs/{job_id}")
            if info["jobStatus"] in ("esriJobSucceeded", "esriJobFailed", "esriJobCancelled"):
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.05)

    def run(self, task: str, **params) -> dict:
        job = self.post(f"{task}/submitJob", **params)
        assert job["jobStatus"] == "esriJobSubmitted" and job["jobId"].startswith("j")
        return self.wait(task, job["jobId"])

    def publish(self, project: Path, folder: str, name: str, *, keep: bool, cache: bool) -> dict:
        sd = make_sd(project, folder, name, keep=keep, cache=cache)
        item = self.upload(sd)
        assert item["status"] == "success", item
        return self.run(PUBLISH, in_sdp_id=item["item"]["itemID"])


def make_sd(project: Path, folder: str, name: str, *, keep: bool, cache: bool) -> Path:
    """A staged service definition (7-Zip: manifest.xml, serviceconfiguration.json, data)."""
    out = project.parent / f"{name}-{uuid.uuid4().hex[:6]}.sd"
    return make_service_definition(project, out, folder, name, keep_cache=keep, include_cache=cache)


def all_tiles(cache: Path) -> dict:
    with read_compact_cache(cache) as store:
        addrs = list(store.iter_tiles())
        return store.get_many(addrs)


def aoi_featureset(poly: Polygon, sr: dict = WM) -> str:
    ring = [list(xy) for xy in poly.exterior.coords]
    return json.dumps(
        {
            "geometryType": "esriGeometryPolygon",
            "spatialReference": sr,
            "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID"}],
            "features": [{"geometry": {"rings": [ring]}, "attributes": {"OBJECTID": 1}}],
        }
    )


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> Path:
    """The sample county at levels 13-16, seeded (one render process)."""
    root = tmp_path_factory.mktemp("emu-county") / "county"
    sample.generate(root)
    init_project(root, style=root / "style.xml", levels="13-16", force=True)
    project = Project.load(root)
    # The emulated server keeps no background-only tile and redraws whole supertiles,
    # which reach beyond the data: the local seeds it is compared with keep none either.
    project = project.updated(render={"processes": 1}, cache={"blank_tiles": "skip"})
    project.save()
    seed(load_project(root))
    return root


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with Emulator(tmp_path_factory.mktemp("emu-server"), username=USER, password=PASSWORD) as e:
        yield e


@pytest.fixture(autouse=True)
def _clean_faults(request):
    yield
    if "emu" in request.fixturenames:
        e = request.getfixturevalue("emu")
        e.faults = Faults()
        e.clock = time.time


@pytest.fixture(scope="module")
def client(emu) -> Client:
    c = Client(emu)
    c.login()
    return c


@pytest.fixture(scope="module")
def published(emu, county, client) -> str:
    info = client.publish(county, "Tests", "County", keep=False, cache=True)
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    return "Tests/County"


# ------------------------------------------------------------------------------- tokens


def test_token_flow(emu):
    c = Client(emu)
    bad = c.login(password="wrong")
    assert bad == {
        "error": {
            "code": 400,
            "message": "Unable to generate token.",
            "details": ["Invalid username or password."],
        }
    }
    status, _h, body = http(
        f"{emu.url}/tokens/generateToken?username={USER}&f=json", headers={"Referer": REFERER}
    )
    assert status == 200 and json.loads(body)["error"]["code"] == 405  # POST only

    t0 = time.time()
    ok = c.login()
    assert ok["ssl"] is False and isinstance(ok["token"], str) and len(ok["token"]) > 40
    assert abs(ok["expires"] / 1000 - (t0 + 3600)) < 30

    assert c.get("rest/services")["folders"]  # header
    assert emu.requests[-1].token_via == "header"
    c.via = "param"
    assert "folders" in c.get("rest/services")
    last = emu.requests[-1]
    assert last.token_via == "param" and last.params["token"] == "***"

    assert c.get("rest/services", auth=False)["error"]["code"] == 499
    assert c.get("rest/services", auth=False)["error"]["message"] == "Token Required"
    c.token = "not-a-token"
    assert c.get("rest/services")["error"] == {
        "code": 498,
        "message": "Invalid Token",
        "details": [],
    }

    # a referer token needs the Referer header; a requestip token does not
    c.login()
    assert "error" not in c.get("rest/services")
    c.referer = None
    assert c.get("rest/services")["error"]["code"] == 498
    ip = Client(emu, referer=None)
    ip.login(client="requestip", referer="")
    assert "error" not in ip.get("rest/services")

    # expiry: the emulator's clock moves past the token's lifetime
    c.referer = REFERER
    c.login(expiration="1")
    assert "error" not in c.get("rest/services")
    emu.clock = lambda: time.time() + 61
    assert c.get("rest/services")["error"]["code"] == 498
    emu.clock = time.time
    assert "error" not in c.get("rest/services")
    emu.expire_tokens_now()
    assert c.get("rest/services")["error"]["code"] == 498
    c.login()
    assert "error" not in c.get("rest/services")
    emu.faults.reject_tokens = True
    assert c.get("rest/services")["error"]["code"] == 498

    logged = repr(emu.requests)
    assert PASSWORD not in logged and "wrong" not in logged and c.token not in logged
    assert PASSWORD not in repr(emu)
    # the admin API answers in its own error shape
    assert c.get(STATS, auth=False) == {
        "status": "error",
        "messages": ["Token Required."],
        "code": 499,
    }


# ------------------------------------------------------------------------------- publishing


def test_publish_catalog_and_mapserver_json(emu, client, published, county):
    root = client.get("rest/services")
    assert "Tests" in root["folders"] and "System" in root["folders"]
    assert client.get("rest/services/Tests")["services"] == [
        {"name": "Tests/County", "type": "MapServer"}
    ]
    info = client.get(f"rest/services/{published}/MapServer")
    assert info["singleFusedMapCache"] is True
    ti = info["tileInfo"]
    assert (ti["rows"], ti["cols"], ti["dpi"], ti["format"]) == (256, 256, 96, "PNG32")
    assert ti["spatialReference"]["wkid"] == 102100
    assert [lod["level"] for lod in ti["lods"]] == list(range(17))
    for lod in ti["lods"]:
        assert math.isclose(lod["scale"], scale(lod["level"]), rel_tol=1e-12)
    assert math.isclose(info["minScale"], scale(13)) and math.isclose(info["maxScale"], scale(16))
    assert info["capabilities"] and info["spatialReference"]["wkid"] == 102100
    ext = info["fullExtent"]
    assert ext["xmin"] < sample.X0 < ext["xmax"] and ext["ymin"] < sample.Y0 < ext["ymax"]
    assert [lyr["name"] for lyr in info["layers"]] == ["water", "parcels", "buildings", "roads"]

    missing = client.get("rest/services/Tests/Nope/MapServer")
    assert missing["error"]["code"] == 404 and missing["error"]["message"] == "Service not found"
    params = client.get(CACHE)["parameters"]
    assert {p["name"] for p in params} >= {
        "service_url",
        "levels",
        "thread_count",
        "update_mode",
        "constraining_extent",
        "area_of_interest",
    }


def test_tiles_over_http_equal_the_compact_cache(emu, client, published, county):
    served = emu.service("Tests", "County").cache_path
    with read_compact_cache(served) as store, read_compact_cache(county / "cache") as source:
        assert store.count() == source.count()
        for level in range(13, 17):
            for addr in list(store.iter_tiles(level))[:8]:
                status, headers, body = client.tile(published, *addr)
                assert status == 200 and headers["Content-Type"] == "image/png"
                assert body == store.get(*addr) == source.get(*addr)
    status, _h, _b = client.tile(published, 13, 0, 0)
    assert status == 404
    status, _h, _b = client.tile("Tests/Nope", 13, 0, 0)
    assert status == 404


def test_publish_rejects_a_non_zip_and_unknown_items(emu, client, tmp_path):
    bogus = tmp_path / "real.sd"
    bogus.write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 64)
    item = client.upload(bogus)["item"]["itemID"]
    info = client.run(PUBLISH, in_sdp_id=item)
    assert info["jobStatus"] == "esriJobFailed"
    assert any("7z" in m["description"] for m in info["messages"])
    info = client.run(PUBLISH, in_sdp_id="i" + "0" * 32)
    assert info["jobStatus"] == "esriJobFailed"


# ------------------------------------------------------------------------------- cache jobs


def test_cache_job_rerenders_exactly_the_tiles_in_the_aoi(emu, client, county, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(county, edited)
    assert client.publish(edited, "Tests", "Edited", keep=False, cache=True)["jobStatus"] == (
        "esriJobSucceeded"
    )
    # the building apply_edits deletes, then the edits; a fresh seed is the reference
    _m, _f, geoms, _v = pyogrio.raw.read(str(edited / "data" / "county.gpkg"), layer="buildings")
    gone = shapely.from_wkb(geoms[len(geoms) // 2])
    sample.apply_edits(edited)
    seed(load_project(edited))
    reference = all_tiles(edited / "cache")
    info = client.publish(edited, "Tests", "Edited", keep=True, cache=False)
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    served = emu.service("Tests", "Edited").cache_path
    before = all_tiles(served)
    assert before == all_tiles(county / "cache")  # the cache was kept, data is new

    cx, cy = gone.centroid.x, gone.centroid.y
    aoi = Polygon([(cx - 700, cy - 420), (cx + 760, cy - 260), (cx + 90, cy + 720)])
    scales = [scale(15), scale(16)]
    info = client.run(
        CACHE,
        service_url="Tests/Edited:MapServer",
        levels=";".join(repr(s) for s in scales),
        thread_count="-1",
        update_mode="RECREATE_ALL_TILES",
        constraining_extent=json.dumps(
            {
                "xmin": cx - 5000,
                "ymin": cy - 5000,
                "xmax": cx + 5000,
                "ymax": cy + 5000,
                "spatialReference": WM,
            }
        ),
        area_of_interest=aoi_featureset(aoi),
    )
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    rec = emu.jobs[info["jobId"]].record
    assert rec["levels"] == [15, 16] and rec["scales"] == scales
    assert json.loads(rec["aoi"])["features"][0]["geometry"]["rings"]

    # independent: every tile of 15/16 whose area overlaps the AOI polygon
    expected = set()
    half = 20037508.342787
    for level in (15, 16):
        size = 256 * 156543.033928 / 2**level
        x0, y0, x1, y1 = aoi.bounds
        for row in range(int((half - y1) // size) - 1, int((half - y0) // size) + 2):
            for col in range(int((x0 + half) // size) - 1, int((x1 + half) // size) + 2):
                tile = box(*tile_bounds(web_mercator(), level, row, col))
                if tile.intersection(aoi).area > 0:
                    expected.add((level, row, col))
    assert set(rec["area_tiles"]) == expected
    in_box = {a for a in expected if a[0] == 16}
    rows = range(min(a[1] for a in in_box), max(a[1] for a in in_box) + 1)
    cols = range(min(a[2] for a in in_box), max(a[2] for a in in_box) + 1)
    assert 4 <= len(in_box) < len(rows) * len(cols)  # a polygon, not its bounding box
    # ArcGIS draws whole supertiles (2048 px = 8 x 8 tiles with antialiasing, the
    # emulator's default AntialiasingMode), counted from the origin, and cuts them all.
    supertiles = {(lv, r // 8, c // 8) for lv, r, c in expected}
    assert set(rec["supertiles"]) == supertiles
    expected = {
        (lv, 8 * sr + i, 8 * sc + j)
        for lv, sr, sc in supertiles
        for i in range(8)
        for j in range(8)
    }
    assert set(rec["tiles"]) == expected
    assert set(rec["written"]) | set(rec["deleted"]) <= expected and rec["written"]

    after = all_tiles(served)
    changed_inside = changed_outside = 0
    for addr in set(before) | set(after) | set(reference):
        if addr in expected:
            assert after.get(addr) == reference.get(addr), addr
            changed_inside += before.get(addr) != reference.get(addr)
        else:
            assert after.get(addr) == before.get(addr), addr
            changed_outside += before.get(addr) != reference.get(addr)
    assert changed_inside and changed_outside  # the edit shows inside; outside stays stale

    # what the job wrote is served
    addr = rec["written"][0]
    status, _h, body = client.tile("Tests/Edited", *addr)
    assert status == 200 and body == reference[tuple(addr)]


def test_delete_then_recreate_empty_tiles(emu, client, published, county):
    served = emu.service("Tests", "County").cache_path
    original = all_tiles(served)
    xmin, ymin = sample.X0, sample.Y0
    extent = json.dumps(
        {"xmin": xmin, "ymin": ymin, "xmax": xmin + 900, "ymax": ymin + 700, "spatialReference": WM}
    )
    common = {
        "service_url": "Tests/County:MapServer",
        "levels": repr(scale(14)),
        "thread_count": "2",
        "constraining_extent": extent,
    }
    report = client.post(f"{REPORT}/execute", service_url="Tests/County:MapServer")
    counts = {i["levelID"]: i["tileCount"] for i in report["results"][0]["value"]["lodInfos"]}
    with read_compact_cache(county / "cache") as src:
        assert counts == {lv: src.count().get(lv, 0) for lv in range(13, 17)}

    info = client.run(CACHE_OLD, update_mode="DELETE_TILES", **common)
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    rec = emu.jobs[info["jobId"]].record
    assert rec["deleted"] and all(lv == 14 for lv, _r, _c in rec["deleted"])
    after = all_tiles(served)
    assert set(original) - set(after) == set(map(tuple, rec["deleted"]))
    report = client.post(f"{REPORT}/execute", service_url="Tests/County:MapServer")
    lod14 = [i for i in report["results"][0]["value"]["lodInfos"] if i["levelID"] == 14][0]
    assert lod14["tileCount"] == counts[14] - len(rec["deleted"])

    info = client.run(CACHE, update_mode="RECREATE_EMPTY_TILES", **common)
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    rec2 = emu.jobs[info["jobId"]].record
    assert sorted(map(tuple, rec2["written"])) == sorted(map(tuple, rec["deleted"]))
    assert all_tiles(served) == original


def test_recreate_all_deletes_tiles_that_became_blank(emu, client, published):
    """A stored tile where nothing is drawn any more is removed, as a full build would."""
    from tiledelta.stores import open_store

    svc = emu.service("Tests", "County")
    with read_compact_cache(svc.cache_path) as store:
        some = next(iter(store.iter_tiles(15)))
        png = store.get(*some)
    far = tile_bounds(web_mercator(), 15, some[1] + 40, some[2] + 40)  # no data out there
    level, row, col = 15, some[1] + 40, some[2] + 40
    project = Project.load(svc.path)
    with open_store("compact", svc.cache_path, project.cache_scheme) as store:
        store.put_many([(level, row, col, png)])
    assert client.tile(published, level, row, col)[0] == 200
    info = client.run(
        CACHE,
        service_url="Tests/County:MapServer",
        levels=repr(scale(15)),
        thread_count="-1",
        update_mode="RECREATE_ALL_TILES",
        constraining_extent=json.dumps(
            {
                "xmin": far.xmin + 1,
                "ymin": far.ymin + 1,
                "xmax": far.xmax - 1,
                "ymax": far.ymax - 1,
                "spatialReference": WM,
            }
        ),
    )
    assert info["jobStatus"] == "esriJobSucceeded", info["messages"]
    rec = emu.jobs[info["jobId"]].record
    # the tile's whole supertile (8 x 8 tiles) is redrawn; only the stored tile goes
    assert rec["area_tiles"] == [(15, row, col)] and rec["deleted"] == [(15, row, col)]
    assert len(rec["tiles"]) == 64 and (15, row, col) in rec["tiles"]
    assert client.tile(published, level, row, col)[0] == 404


def test_bad_cache_jobs_fail_with_a_message(emu, client, published):
    def run(**params):
        base = {
            "service_url": "Tests/County:MapServer",
            "levels": repr(scale(15)),
            "thread_count": "-1",
            "update_mode": "RECREATE_ALL_TILES",
        }
        info = client.run(CACHE, **{**base, **params})
        assert info["jobStatus"] == "esriJobFailed"
        return " ".join(m["description"] for m in info["messages"])

    assert "12345.6" in run(levels=f"{scale(15)!r};12345.6")
    poly = box(-123.8, 46.1, -123.7, 46.2)
    assert "4326" in run(area_of_interest=aoi_featureset(poly, {"wkid": 4326}))
    assert "not found" in run(service_url="Tests/Nope:MapServer")
    assert "FIX_JOB" in run(update_mode="FIX_JOB")


# ------------------------------------------------------------------------------- faults


def test_faults(emu, client, published):
    emu.faults.http_500 = 2
    for _ in range(2):
        status, headers, _b = http(f"{emu.url}/rest/info?f=json")
        assert status == 500 and headers["Content-Type"].startswith("text/html")
    status, _h, body = http(f"{emu.url}/rest/info?f=json")
    assert status == 200 and json.loads(body)["authInfo"]["isTokenBasedSecurity"] is True

    base = {
        "service_url": "Tests/County:MapServer",
        "levels": repr(scale(13)),
        "thread_count": "1",
        "update_mode": "RECREATE_ALL_TILES",
    }
    emu.faults.fail_next_jobs = 1
    failed = client.run(CACHE, **base)
    assert failed["jobStatus"] == "esriJobFailed"
    assert any(m["type"] == "esriJobMessageTypeError" for m in failed["messages"])
    assert client.run(CACHE, **base)["jobStatus"] == "esriJobSucceeded"

    assert client.get(STATS)["summary"]["busy"] == 0
    emu.faults.busy = 2
    assert [client.get(STATS)["summary"]["busy"] for _ in range(3)] == [1, 1, 0]

    # a slow job is busy while it runs, and a cancel ends it
    emu.faults.slow_job_seconds = 20
    job = client.post(f"{CACHE}/submitJob", **base)
    deadline = time.monotonic() + 10
    while client.get(f"{CACHE}/jobs/{job['jobId']}")["jobStatus"] != "esriJobExecuting":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.get(STATS)["summary"]["busy"] == 1
    client.post(f"{CACHE}/jobs/{job['jobId']}/cancel")
    assert client.wait(CACHE, job["jobId"], timeout=5)["jobStatus"] == "esriJobCancelled"
    assert client.get(STATS)["summary"]["busy"] == 0


def test_cli_serves_and_hides_the_password(tmp_path):
    env = {**os.environ, "ARCGIS_PASSWORD": PASSWORD}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "support.emulator",
            "--root",
            str(tmp_path),
            "--port",
            "0",
            "--user",
            USER,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/arcgis")
        status, _h, body = http(
            f"{url}/tokens/generateToken",
            data=urllib.parse.urlencode(
                {"username": USER, "password": PASSWORD, "client": "requestip", "f": "json"}
            ).encode(),
        )
        assert status == 200 and "token" in json.loads(body)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert PASSWORD not in out + err


def test_multipart_parser_keeps_binary_bytes():
    from support.emulator import parse_multipart

    payload = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="description"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="itemFile"; filename="a.sd"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--XyZ--\r\n"
    )
    fields, files = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert fields == {"description": "hello"}
    assert files == {"itemFile": ("a.sd", payload)}
