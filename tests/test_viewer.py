"""The viewer page of ``tiledelta serve`` in a real headless Chromium (Playwright), offline.

The sample county is seeded, edited and updated; a real uvicorn server on 127.0.0.1 serves
it; Chromium (Debian's ``/usr/bin/chromium``, never a downloaded browser) opens ``/`` with
every request that is not to that server aborted, and the test checks the tiles, the change
overlay, zoom and pan, the console, and a screenshot. The endpoints behind the page are
checked through Starlette's test client.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from conftest import set_processes
from PIL import Image
from starlette.applications import Starlette

from tiledelta import sample, viewer
from tiledelta.api import init_project, load_project
from tiledelta.project import Project
from tiledelta.runlog import latest_run
from tiledelta.seed import seed
from tiledelta.serve import create_app
from tiledelta.update import update

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
CENTER = "(() => { const c = tiledelta.map.getCenter(); return [c.lat, c.lng]; })()"
STATE_PLANE = (
    Path(__file__).resolve().parents[1] / "examples" / "schemes" / "oregon_north_2913.json"
)
TILE_URL = re.compile(r"/tiles/(\d+)/(\d+)/(\d+)\.png$")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def county(sample_template: Path, tmp_path_factory) -> Project:
    """The sample county at levels 12-17, seeded, edited and updated (one process)."""
    root = tmp_path_factory.mktemp("viewer") / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="12-17", force=True)
    set_processes(root, 1)
    seed(load_project(root))
    sample.apply_edits(root)
    update(load_project(root))
    return Project.load(root)


@pytest.fixture(scope="module")
def run_files(county: Project) -> tuple[dict, dict]:
    folder = latest_run(county)
    assert folder is not None
    changes = json.loads((folder / "changes.geojson").read_text())
    tiles = json.loads((folder / "tiles.json").read_text())
    return changes, tiles


@pytest.fixture(scope="module")
def stored(county: Project) -> set[tuple[int, int, int]]:
    with county.open_store(create=False) as store:
        return set(store.iter_tiles())


class LiveServer:
    """uvicorn serving ``app`` in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, app) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.netloc = f"127.0.0.1:{port}"
        self.base = f"http://{self.netloc}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def raw(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
        conn = http.client.HTTPConnection(*self.netloc.split(":"), timeout=10)
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.endheaders()
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(county: Project) -> Iterator[LiveServer]:
    with LiveServer(create_app(county)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium) - no real browser to test in")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Session:
    """A browser page that may only reach ``server``, recording what else it tried."""

    def __init__(self, browser, server: LiveServer) -> None:
        self.server = server
        self.ctx = browser.new_context(viewport={"width": 1024, "height": 768})
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.bad_status: list[tuple[int, str]] = []
        self.console_errors: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.ctx.route("**/*", self._route)
        self.page = self.ctx.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        # Leaflet cancels tile loads that a zoom or pan made useless (net::ERR_ABORTED):
        # that is the browser working as meant, not a failure.
        self.page.on(
            "requestfailed",
            lambda req: (
                None
                if "ERR_ABORTED" in (req.failure or "")
                else self.failed.append(f"{req.url} ({req.failure})")
            ),
        )
        self.page.on(
            "response", lambda r: r.status >= 400 and self.bad_status.append((r.status, r.url))
        )

    def _route(self, route) -> None:
        if urlsplit(route.request.url).netloc == self.server.netloc:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.console_errors.append((msg.text, msg.location.get("url", "")))

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def session(browser, server) -> Iterator[Session]:
    s = Session(browser, server)
    yield s
    s.close()


# --------------------------------------------------------------------------------- tests


def _tiles(page) -> list[dict]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('img.leaflet-tile')).map(i => ({
            src: i.src, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))"""
    )


def _settle(page) -> None:
    page.wait_for_function("() => window.tiledelta && window.tiledelta.ready", timeout=10_000)
    page.wait_for_function("() => !window.tiledelta.cache.isLoading()", timeout=10_000)
    page.wait_for_load_state("networkidle")
    # Leaflet prunes the previous level's tiles shortly after the new level has loaded.
    page.wait_for_function(
        """() => { const z = '/tiles/' + tiledelta.map.getZoom() + '/';
            return Array.from(document.querySelectorAll('img.leaflet-tile'))
                .every(i => i.src.includes(z)); }""",
        timeout=10_000,
    )


def _wait_level(page, z: int) -> None:
    page.wait_for_function(f"() => tiledelta.map.getZoom() === {z} && tiledelta.tileLevel === {z}")
    _settle(page)


def _addr(url: str) -> tuple[int, int, int]:
    m = TILE_URL.search(urlsplit(url).path)
    assert m, url
    z, x, y = map(int, m.groups())
    return z, y, x  # (level, row, col)


def _check_tiles(page, stored: set, min_loaded: int) -> set[str]:
    """Every tile img finished; stored tiles decoded at 256 px; the rest are blank tiles."""
    tiles = _tiles(page)
    assert tiles, "no Leaflet tile images"
    loaded = set()
    for t in tiles:
        assert t["complete"], t
        if _addr(t["src"]) in stored:
            assert (t["w"], t["h"]) == (256, 256), t
            loaded.add(t["src"])
        else:  # the cache keeps no blank tiles: the server answers 404 for them
            assert t["w"] == 0, t
    assert len(loaded) >= min_loaded, f"only {len(loaded)} tiles loaded"
    return loaded


def _check_clean(s: Session, stored: set) -> None:
    """Nothing left 127.0.0.1; the only failures are 404s for blank (unstored) tiles."""
    assert s.blocked == [], f"requests to other hosts: {s.blocked}"
    assert s.failed == [], f"failed requests: {s.failed}"
    assert s.page_errors == []
    for status, url in s.bad_status:
        assert status == 404 and _addr(url) not in stored, (status, url)
    blank_urls = {url for _, url in s.bad_status}
    for text, url in s.console_errors:
        assert url in blank_urls and "404" in text, f"console error: {text} ({url})"


def _need_leaflet() -> None:
    if viewer.leaflet_dir() is None:
        pytest.skip("Leaflet is not installed: run `npm install` at the repository root")


def test_viewer_page(session: Session, stored, run_files, tmp_path) -> None:
    _need_leaflet()
    changes, tiles_json = run_files
    page = session.page
    page.goto(session.server.base + "/")
    _settle(page)
    assert page.title().startswith("county")
    assert page.locator("#notice").is_hidden()

    # -- tiles of the cache at the fitted level
    zoom = page.evaluate("tiledelta.map.getZoom()")
    assert 13 <= zoom <= 16
    first = _check_tiles(page, stored, min_loaded=4)
    assert all(_addr(u)[0] == zoom for u in first)

    # -- the change overlay: one SVG path per changed feature, one per re-rendered tile
    feats = changes["features"]
    n_old = sum(f["properties"]["change"] == "old" for f in feats)
    assert n_old and len(feats) - n_old
    pane = page.locator(".leaflet-tdChanges-pane svg path.td-change")
    assert pane.count() == len(feats)
    assert page.locator("path.td-change-old").count() == n_old
    assert page.locator("path.td-change-old").first.get_attribute("stroke-dasharray") == "6 4"
    assert page.locator("path.td-change-new").count() == len(feats) - n_old
    outlines = page.locator(".leaflet-tdTiles-pane svg path.td-tile")
    assert outlines.count() == len(tiles_json["levels"].get(str(zoom), []))
    assert outlines.count() > 0
    legend = page.locator(".legend").inner_text()
    assert "old box" in legend and f"{outlines.count()} of " in legend

    # -- the service URLs drop down from the header
    page.click("#urls summary")
    assert "/wmts/1.0.0/WMTSCapabilities.xml" in page.locator("#urls .drop").inner_text()
    page.screenshot(path=str(tmp_path / "viewer-urls.png"))
    page.click("#urls summary")
    assert page.locator("#urls .drop").is_hidden()

    # -- the screenshot is a drawn map, not a blank page
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot))
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500, f"{len(colours or [])} colours"
    top = max(c for c, _ in colours)
    assert top < 0.8 * img.width * img.height, "one colour fills most of the page"

    # -- zoom in with the '+' button, level by level up to 17: new tiles and outlines
    levels = tiles_json["levels"]
    for z in range(zoom + 1, 18):
        page.click(".leaflet-control-zoom-in")
        _wait_level(page, z)
        loaded = _check_tiles(page, stored, min_loaded=4)
        assert {_addr(u)[0] for u in loaded} == {z}
        assert outlines.count() == len(levels.get(str(z), []))
    page.screenshot(path=str(tmp_path / "viewer-17.png"))

    # -- pan by dragging the map: the centre moves and new tiles load
    before = page.evaluate(CENTER)
    box = page.locator("#map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 200, cy - 150, steps=8)
    page.mouse.move(cx - 400, cy - 300, steps=8)
    page.mouse.up()
    _settle(page)
    after = page.evaluate(CENTER)
    assert after[1] > before[1] and after[0] < before[0], (before, after)
    panned = _check_tiles(page, stored, min_loaded=4)
    assert panned - loaded, "panning loaded no new tiles"
    page.screenshot(path=str(tmp_path / "viewer-17-panned.png"))

    # -- zoom out with the keyboard down to one level below the fitted one
    page.focus("#map")
    for z in range(16, zoom - 2, -1):
        page.keyboard.press("Minus")
        _wait_level(page, z)
    out = _check_tiles(page, stored, min_loaded=1)
    assert {_addr(u)[0] for u in out} == {zoom - 1}
    assert outlines.count() == len(levels.get(str(zoom - 1), []))
    assert pane.count() == len(feats)

    _check_clean(session, stored)


def test_viewer_without_leaflet(session: Session, monkeypatch, tmp_path) -> None:
    """Without ``npm install`` the page says how to install Leaflet."""
    monkeypatch.setattr(viewer, "LEAFLET_DIRS", (tmp_path / "no-node-modules",))
    page = session.page
    page.goto(session.server.base + "/")
    notice = page.locator("#notice")
    notice.wait_for(state="visible", timeout=10_000)
    assert "npm install" in notice.inner_text()
    assert page.evaluate("window.tiledelta.error") == "leaflet-missing"
    page.screenshot(path=str(tmp_path / "no-leaflet.png"))
    assert session.blocked == []


def test_viewer_custom_scheme(browser, sample_template, tmp_path) -> None:
    """A State Plane cache just seeded: notices, no tiles requested, nothing off-host."""
    _need_leaflet()
    root = tmp_path / "county_sp"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="6-7", scheme=str(STATE_PLANE), force=True)
    set_processes(root, 1)
    seed(load_project(root))
    with LiveServer(create_app(Project.load(root))) as srv:
        s = Session(browser, srv)
        try:
            s.page.goto(srv.base + "/")
            s.page.wait_for_function("() => window.tiledelta && window.tiledelta.ready")
            text = s.page.locator("#notice").inner_text()
            s.page.screenshot(path=str(tmp_path / "stateplane.png"))
            assert "Web Mercator" in text and "/arcgis/rest/services/county_sp/MapServer" in text
            assert "recorded no changes.geojson" in text  # the last run is a seed
            assert "No changes recorded" in s.page.locator(".legend").inner_text()
            assert s.page.locator("img.leaflet-tile").count() == 0
            assert s.page.locator("path.td-change, path.td-tile").count() == 0
            assert s.blocked == [] and s.failed == [] and s.page_errors == []
            # the only errors: the browser logging the two 404s of the absent run files
            assert sorted(urlsplit(u).path for _, u in s.bad_status) == [
                "/runs/latest/changes.geojson",
                "/runs/latest/tiles.json",
            ]
            assert all("404" in t for t, _ in s.console_errors), s.console_errors
        finally:
            s.close()


# ----------------------------------------------------------------------------- endpoints


def test_run_endpoints(server: LiveServer, run_files) -> None:
    changes, tiles = run_files
    with httpx.Client(base_url=server.base) as client:
        r = client.get("/runs/latest/changes.geojson")
        assert r.status_code == 200 and r.json() == changes
        assert r.headers["content-type"].startswith("application/geo+json")
        assert client.get("/runs/latest/tiles.json").json() == tiles
        assert client.get("/runs/latest/summary.json").json()["run"] == 2
        for bad in ("/runs/latest/state.sqlite", "/runs/latest/..%2Fstate.sqlite"):
            assert client.get(bad).status_code == 404
            assert server.raw(bad)[0] == 404
        assert client.get("/runs/000001/summary.json").status_code == 404
        assert client.get("/static/viewer.js").status_code == 200
        page = client.get("/").text
        assert "viewer.js" in page and "<!-- tiledelta:service-urls -->" not in page
        assert f"{server.base}/arcgis/rest/services/county/MapServer</code>" in page
        _need_leaflet()
        r = client.get("/vendor/leaflet/leaflet.js")
        assert r.status_code == 200 and "Leaflet" in r.text[:400]
        assert client.get("/vendor/leaflet/images/layers.png").content[:4] == b"\x89PNG"
        for bad in ("/vendor/leaflet/../package.json", "/vendor/leaflet/leaflet-src.js"):
            assert server.raw(bad)[0] == 404
        assert server.raw("/vendor/leaflet/images/../leaflet.js")[0] == 404


def test_run_endpoints_without_runs(tmp_path, monkeypatch) -> None:
    fake = SimpleNamespace(state_dir=tmp_path / ".tiledelta")
    with (
        LiveServer(Starlette(routes=viewer.routes(fake))) as srv,
        httpx.Client(base_url=srv.base) as client,
    ):
        r = client.get("/runs/latest/tiles.json")
        assert r.status_code == 404 and "no run yet" in r.json()["error"]["message"]
        (tmp_path / ".tiledelta" / "runs" / "000001").mkdir(parents=True)
        (tmp_path / ".tiledelta" / "runs" / "000001" / "summary.json").write_text('{"run": 1}')
        r = client.get("/runs/latest/changes.geojson")
        assert r.status_code == 404 and "000001" in r.json()["error"]["message"]
        assert client.get("/runs/latest/summary.json").json() == {"run": 1}
        monkeypatch.setattr(viewer, "LEAFLET_DIRS", (tmp_path / "nothing",))
        r = client.get("/vendor/leaflet/leaflet.css")
        assert r.status_code == 404 and "npm install" in r.json()["error"]["message"]
