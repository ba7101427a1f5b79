"""The viewer page of ``tiledelta serve`` in a real headless Chromium (Playwright), offline.

The sample county is seeded, edited and updated; a real uvicorn server on 127.0.0.1 serves
it; Chromium (Debian's ``/usr/bin/chromium``, never a downloaded browser) opens ``/`` with
every request that is not to that server aborted, and the test checks the tiles, the change
overlay, zoom and pan, the console, and a screenshot. The endpoints behind the page are
checked through Starlette's test client.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import LiveServer, set_processes
from PIL import Image, ImageChops
from starlette.applications import Starlette

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed, update
from tiledelta.grid import tile_bounds, web_mercator
from tiledelta.project import Project
from tiledelta.runs.folder import latest_run
from tiledelta.serve import viewer
from tiledelta.serve.app import create_app
from tiledelta.stores import open_project_store

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
TILE_URL = re.compile(r"/(?:tiles|runs/latest/before)/(\d+)/(\d+)/(\d+)\.png$")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def county(sample_template: Path, tmp_path_factory) -> Project:
    """The sample county at levels 12-17, seeded, edited and updated (one process)."""
    root = tmp_path_factory.mktemp("viewer") / "county"
    shutil.copytree(sample_template, root)
    init_project(root, style=root / "style.xml", levels="12-17", force=True)
    set_processes(root, 1)
    # Background-only tiles not kept, so the update adds and removes tiles for the swipe.
    Project.load(root).updated(cache={"blank_tiles": "skip"}).save()
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
    with open_project_store(county, create=False) as store:
        return set(store.iter_tiles())


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
            return Array.from(document.querySelectorAll('.leaflet-tile-pane img.leaflet-tile'))
                .every(i => i.src.includes(z)); }""",
        timeout=10_000,
    )
    # ...and every tile image the page holds has finished (loaded, or failed with a 404).
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('img.leaflet-tile')).every(i => i.complete)",
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


def _extent(page) -> tuple[float, float, float, float]:
    """The served cache's extent (scheme units), as the page's server says it."""
    return tuple(page.evaluate("fetch('/service.json').then((r) => r.json())")["extent"])


def _inside(extent: tuple[float, float, float, float], addr: tuple[int, int, int]) -> bool:
    b = tile_bounds(web_mercator(), *addr)
    return b.xmin < extent[2] and b.xmax > extent[0] and b.ymin < extent[3] and b.ymax > extent[1]


def _check_tiles(page, stored: set, min_loaded: int) -> set[str]:
    """Every tile img finished; stored tiles decoded at 256 px; the rest are blank tiles:
    inside the cache's extent the server answers the background tile (256 px), outside
    it a 404 (no image)."""
    tiles = _tiles(page)
    assert tiles, "no Leaflet tile images"
    extent = _extent(page)
    loaded = set()
    for t in tiles:
        assert t["complete"], t
        addr = _addr(t["src"])
        if addr in stored:
            assert (t["w"], t["h"]) == (256, 256), t
            loaded.add(t["src"])
        elif _inside(extent, addr):  # background only, not kept: the blank tile
            assert (t["w"], t["h"]) == (256, 256), t
        else:
            assert t["w"] == 0, t
    assert len(loaded) >= min_loaded, f"only {len(loaded)} tiles loaded"
    return loaded


def _check_clean(s: Session, stored: set, stored_before: set | None = None) -> None:
    """Nothing left 127.0.0.1; the only failures are 404s for blank (unstored) tiles, now
    or (``/runs/latest/before/``) before the last run."""
    assert s.blocked == [], f"requests to other hosts: {s.blocked}"
    assert s.failed == [], f"failed requests: {s.failed}"
    assert s.page_errors == []
    extent = _extent(s.page)
    for status, url in s.bad_status:
        had = stored_before if "/runs/latest/before/" in url else stored
        assert status == 404 and had is not None and _addr(url) not in had, (status, url)
        if "/runs/latest/before/" not in url:  # no 404 inside the map: blank tiles load
            assert not _inside(extent, _addr(url)), url
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


# ------------------------------------------------------------------- before/after swipe


def _before_rows(folder: Path) -> dict[tuple[int, int, int], bytes | None]:
    con = sqlite3.connect(folder / "before.sqlite")
    try:
        return {(lv, r, c): d for lv, r, c, d in con.execute("SELECT * FROM tiles")}
    finally:
        con.close()


def _current(county: Project, level: int, row: int, col: int) -> bytes | None:
    with open_project_store(county, create=False) as store:
        return store.get(level, row, col)


def _screen_rect(page, z: int, row: int, col: int) -> tuple[int, int, int, int]:
    """The page pixels (x0, y0, x1, y1) of Web Mercator tile z/col/row as drawn now."""
    return tuple(
        page.evaluate(
            f"""() => {{ const m = tiledelta.map, box = m.getContainer().getBoundingClientRect();
            const p = (x, y) => m.latLngToContainerPoint(m.unproject([x * 256, y * 256], {z}));
            const a = p({col}, {row}), b = p({col} + 1, {row} + 1);
            return [a.x + box.left, a.y + box.top, b.x + box.left, b.y + box.top]
                .map(Math.round); }}"""
        )
    )


def test_viewer_swipe(session: Session, county: Project, stored, run_files, tmp_path) -> None:
    """The before/after swipe: before tiles from /runs/latest/before/, clipped left of a
    divider that follows drags, pans and zooms; the two sides differ over changed tiles."""
    _need_leaflet()
    _, tiles_json = run_files
    olds = _before_rows(latest_run(county))
    changed = {(int(z), r, c) for z, rcs in tiles_json["levels"].items() for r, c in rcs}
    assert changed == set(olds)
    # a changed tile at level 16 that existed before and still does, with other bytes now
    z, row, col = next(
        a
        for a in sorted(changed)
        if a[0] == 16 and olds[a] and a in stored and olds[a] != _current(county, *a)
    )
    page = session.page
    before: dict[str, object] = {}
    page.on(
        "response",
        lambda r: "/runs/latest/before/" in r.url and before.setdefault(urlsplit(r.url).path, r),
    )
    page.goto(session.server.base + "/")
    _settle(page)
    toggle = page.locator("button.td-swipe-toggle")
    assert (
        toggle.inner_text() == "Before / after" and toggle.get_attribute("aria-pressed") == "false"
    )
    assert page.locator(".td-swipe").is_hidden() and not before

    # centre the changed tile, then turn the swipe on: before tiles load in their own pane
    page.evaluate(
        f"tiledelta.map.setView(tiledelta.map.unproject([{col} * 256 + 128, {row} * 256 + 128],"
        f" {z}), {z}, {{animate: false}})"
    )
    _wait_level(page, z)
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    page.wait_for_function("() => tiledelta.swipe.on && !tiledelta.swipe.layer.isLoading()")
    page.wait_for_load_state("networkidle")
    srcs = page.eval_on_selector_all(
        ".leaflet-tdBefore-pane img.leaflet-tile", "els => els.map(e => e.src)"
    )
    assert len(srcs) >= 4 and all(f"/runs/latest/before/{z}/" in s for s in srcs), srcs
    assert before and all(p.startswith(f"/runs/latest/before/{z}/") for p in before)
    assert page.locator(".td-swipe-before").inner_text() == "before"
    assert page.locator(".td-swipe-after").inner_text() == "after"

    # the changed tile: the old bytes of before.sqlite, not the current tile
    resp = before[f"/runs/latest/before/{z}/{col}/{row}.png"]
    assert resp.status == 200 and resp.body() == olds[(z, row, col)]
    assert resp.body() != _current(county, z, row, col)
    # tiles the run did not touch: the current bytes
    untouched = [p for p in before if _addr(p) not in olds]
    assert untouched
    for p in untouched:
        a, r = _addr(p), before[p]
        if a in stored:
            assert (r.status, r.body()) == (200, _current(county, *a)), p
        else:
            assert r.status == 404, p

    # -- the divider: clips both panes at its x; dragging it moves the clip
    clip = "() => ['tdBefore', 'tilePane'].map(n => tiledelta.map.getPane(n).style.clip)"
    box = page.locator("#map").bounding_box()
    assert page.evaluate("tiledelta.swipe.x") == round(box["width"] / 2)
    clip0 = page.evaluate(clip)
    assert all(c.startswith("rect(") for c in clip0), clip0
    handle = page.locator(".td-swipe-handle").bounding_box()
    hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    center = page.evaluate(CENTER)
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(hx - 150, hy, steps=5)
    page.mouse.move(box["x"] + 200, hy, steps=5)
    page.mouse.up()
    assert page.evaluate("tiledelta.swipe.x") == 200
    clip1 = page.evaluate(clip)
    assert clip1 != clip0
    nums = [list(map(float, re.findall(r"-?[0-9.]+", c))) for c in clip1]
    assert nums[0][1] == nums[1][3]  # before: right edge == after: left edge (layer px)
    assert page.evaluate(CENTER) == center  # dragging the divider does not pan the map
    # panning moves the panes: the clip follows so the divider stays at x = 200 on screen
    page.evaluate("tiledelta.map.panBy([120, 80], {animate: false})")
    clip2 = page.evaluate(clip)
    assert clip2 != clip1 and page.evaluate("tiledelta.swipe.x") == 200
    nums2 = [list(map(float, re.findall(r"-?[0-9.]+", c))) for c in clip2]
    assert nums2[0][1] - nums[0][1] == 120 and nums2[0][0] - nums[0][0] == 80
    page.evaluate("tiledelta.map.panBy([-120, -80], {animate: false})")
    _settle(page)
    page.wait_for_function("() => !tiledelta.swipe.layer.isLoading()")

    # -- screenshots: divider right of the changed tile (before) vs left of it (after)
    x0, y0, x1, y1 = _screen_rect(page, z, row, col)
    shots = {}
    for name, ratio in (("before", 0.97), ("after", 0.03), ("mid", None)):
        mid = (x0 + x1) / 2 - box["x"]
        page.evaluate(f"tiledelta.swipe.setRatio({ratio if ratio else mid / box['width']})")
        path = tmp_path / f"swipe-{name}.png"
        page.screenshot(path=str(path))
        shots[name] = Image.open(path).convert("RGB")
    crop = (x0 + 3, y0 + 3, x1 - 3, y1 - 3)  # inside the tile outline
    left, right = shots["before"].crop(crop), shots["after"].crop(crop)
    assert ImageChops.difference(left, right).getbbox() is not None, "the tile looks the same"
    # away from both divider positions, pixels differ only over changed tiles
    diff = (
        ImageChops.difference(shots["before"], shots["after"]).convert("L").point(lambda v: v > 0)
    )
    rects = [_screen_rect(page, *a) for a in changed if a[0] == z and a in olds]
    px = diff.load()
    for x in range(0, diff.width, 3):
        if min(abs(x - (box["x"] + box["width"] * r)) for r in (0.97, 0.03)) < 80:
            continue
        for y in range(int(box["y"]), diff.height, 3):
            if px[x, y] and not any(a <= x <= c and b <= y <= d for a, b, c, d in rects):
                pytest.fail(f"before and after differ at ({x}, {y}), outside the changed tiles")
    # one shot with the divider across the tile (the labels sit at the middle of its
    # height): left of it the "before" shot's pixels, right of it the "after" shot's
    xm, ym = round((x0 + x1) / 2), round(box["y"] + box["height"] / 2)
    for band in ((y0 + 3, ym - 30), (ym + 30, y1 - 3)):
        sides = (("before", x0 + 3, xm - 12), ("after", xm + 12, x1 - 3))
        for name, xa, xb in sides:
            region = (xa, band[0], xb, band[1])
            assert shots["mid"].crop(region) == shots[name].crop(region), (name, region)

    # -- zooming recomputes the clip in the new level's layer pixels
    page.evaluate("tiledelta.swipe.setRatio(0.25)")
    page.evaluate(f"tiledelta.map.setZoom({z + 1}, {{animate: false}})")
    _wait_level(page, z + 1)
    page.wait_for_function("() => !tiledelta.swipe.layer.isLoading()")
    expected = page.evaluate(
        """() => { const m = tiledelta.map, s = m.getSize(), x = Math.round(s.x / 4);
            const a = m.containerPointToLayerPoint([0, 0]), b = m.containerPointToLayerPoint(s);
            return [a.x + x, b.x]; }"""
    )
    now = [list(map(float, re.findall(r"-?[0-9.]+", c))) for c in page.evaluate(clip)]
    assert [now[0][1], now[1][3], now[1][1]] == [expected[0], expected[0], expected[1]]
    assert all(
        f"/runs/latest/before/{z + 1}/" in u
        for u in page.eval_on_selector_all(
            ".leaflet-tdBefore-pane img.leaflet-tile", "els => els.map(e => e.src)"
        )
    )

    # -- off again: the before layer and the clips are gone
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    assert page.evaluate(clip) == ["", ""]
    assert page.locator(".leaflet-tdBefore-pane img").count() == 0
    assert page.locator(".td-swipe").is_hidden()
    existed = (stored - changed) | {a for a, data in olds.items() if data}
    _check_clean(session, stored, existed)


def test_before_route(server: LiveServer, county: Project, stored, run_files) -> None:
    """/runs/latest/before/{z}/{x}/{y}.png over the sample county after its update."""
    _, tiles_json = run_files
    folder = latest_run(county)
    olds = _before_rows(folder)
    old = next(a for a, d in sorted(olds.items()) if d and d != _current(county, *a))
    gone = next(a for a, d in sorted(olds.items()) if d is None)  # a tile the run added
    same = next(a for a in sorted(stored) if a not in olds)

    def url(kind: str, a: tuple[int, int, int]) -> str:
        return f"/{kind}/{a[0]}/{a[2]}/{a[1]}.png"

    with httpx.Client(base_url=server.base) as client:
        info = client.get("/runs/latest/before.json").json()
        assert info == {"run": folder.name, "tiles": len(olds), "complete": True}
        # untouched: the current tile, byte for byte
        r = client.get(url("runs/latest/before", same))
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == client.get(url("tiles", same)).content == _current(county, *same)
        # touched: the bytes before.sqlite holds, not the current ones; revalidated by ETag
        r = client.get(url("runs/latest/before", old))
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == olds[old] != client.get(url("tiles", old)).content
        assert r.headers["cache-control"] == "public, max-age=0"
        again = client.get(
            url("runs/latest/before", old), headers={"If-None-Match": r.headers["etag"]}
        )
        assert again.status_code == 304
        # touched, absent before: 404 JSON (the page shows the background)
        r = client.get(url("runs/latest/before", gone))
        assert r.status_code == 404 and "did not exist before" in r.json()["error"]["message"]
        assert client.get(url("tiles", gone)).status_code in (200, 404)
        z = old[0]
        for bad in (
            f"/runs/latest/before/{z}/x/1.png",
            f"/runs/latest/before/{z}/1/1.gif",
            f"/runs/latest/before/{z}/1/-1.png",
            f"/runs/latest/before/{z}/1/1.png.png",
            f"/runs/latest/before/{z}/99999999999/1.png",
            f"/runs/latest/before/{z}/{1 << z}/0.png",  # column past the grid
            "/runs/latest/before/40/0/0.png",  # no such level in the scheme
            "/runs/latest/before/\uff11\uff16/0/0.png",  # fullwidth digits
        ):
            r = client.get(bad)
            assert r.status_code == 404, bad
            assert "out of range" in r.json()["error"]["message"], bad
        assert client.get("/runs/latest/before/16/0/0.png/x").status_code == 404
        for bad in (
            "/runs/latest/before/../../state.sqlite",
            "/runs/latest/before/16/../tiles.json",
        ):
            assert server.raw(bad)[0] == 404, bad


def test_before_route_without_before(tmp_path) -> None:
    """A seed keeps no before.sqlite: 404s. A hand-made one without the tile service: old
    bytes, redirects to /tiles/ for untouched tiles, and a capped file said so."""
    fake = SimpleNamespace(state_dir=tmp_path / ".tiledelta")
    run = tmp_path / ".tiledelta" / "runs" / "000001"
    with (
        LiveServer(Starlette(routes=viewer.routes(fake))) as srv,
        httpx.Client(base_url=srv.base) as client,
    ):
        r = client.get("/runs/latest/before/16/1/2.png")
        assert r.status_code == 404 and "no run yet" in r.json()["error"]["message"]
        run.mkdir(parents=True)
        (run / "summary.json").write_text('{"run": 1}')
        for path in ("/runs/latest/before/16/1/2.png", "/runs/latest/before.json"):
            r = client.get(path)
            assert r.status_code == 404 and "kept no tiles" in r.json()["error"]["message"]

        png = b"\x89PNG\r\n\x1a\n" + b"old"
        con = sqlite3.connect(run / "before.sqlite")
        con.execute("CREATE TABLE tiles (level, row, col, data BLOB)")
        con.executemany(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)", [(16, 2, 1, png), (16, 3, 1, None)]
        )
        con.commit()
        con.close()
        (run / "tiles.json").write_text('{"levels": {"16": [[2, 1], [3, 1], [4, 1]]}}')
        r = client.get("/runs/latest/before/16/1/2.png")
        assert (r.status_code, r.content, r.headers["content-type"]) == (200, png, "image/png")
        assert client.get("/runs/latest/before/16/1/3.png").status_code == 404
        r = client.get("/runs/latest/before/16/1/4.png")  # changed, but past the cap
        assert r.status_code == 404 and "full" in r.json()["error"]["message"]
        assert client.get("/runs/latest/before.json").json() == {
            "run": "000001",
            "tiles": 2,
            "complete": False,
        }
        r = client.get("/runs/latest/before/16/7/9.png", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/tiles/16/7/9.png"
