"""Endpoints behind the viewer page of ``tiledelta serve`` (``static/index.html``).

- ``/runs/latest/summary.json``, ``/runs/latest/changes.geojson`` and
  ``/runs/latest/tiles.json``: the newest run's files (see :mod:`tiledelta.runs.folder`), read
  from ``<project>/.tiledelta/runs`` only; a 404 JSON error when there is no run or the
  newest run did not record that file (a seed records no changes).
- ``/runs/latest/before/{z}/{x}/{y}.png`` (Web Mercator caches): a tile as it was before
  the newest run, for the viewer's before/after swipe. A tile the run replaced or removed
  answers its old bytes from the run's ``before.sqlite`` (a 404 when it did not exist
  before, so the page shows the background); a tile the run did not touch answers the
  current tile, as ``/tiles/...`` does. A 404 JSON error when the newest run kept no
  ``before.sqlite`` (a seed) or kept too little of it to tell (``before.json`` says which).
- ``/runs/latest/before.json``: ``{"run", "tiles", "complete"}`` of that ``before.sqlite``
  (404 without one); the page offers the swipe only when it answers.
- ``/`` (through :func:`page`): ``static/index.html`` with the service URLs listed.
- ``/vendor/leaflet/...``: Leaflet's ``dist`` files, from ``node_modules/leaflet/dist``
  at the repository root (``npm install`` there, see ``package.json``) or, for a packaged
  install, from ``tiledelta/static/vendor/leaflet``. Nothing is fetched from a CDN: the
  page works offline. Only the fixed file names below are served.

Request paths are only ever matched against fixed names, never joined to a folder; and
every file read must resolve inside its folder (the run folders, Leaflet's ``dist``), as
tiles must inside the cache: a symlink pointing elsewhere is treated as absent.
"""

from __future__ import annotations

import html
import json
import sqlite3
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tiledelta.project import Project
from tiledelta.runs.folder import BEFORE_FILE, before_tile, latest_run, runs_dir
from tiledelta.serve.http import (
    NO_CACHE,
    TILE_NAME,
    confined_path,
    error_response,
    json_response,
    parse_int,
    read_confined,
    tile_response,
)
from tiledelta.stores import TileHit

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where Leaflet's ``dist`` folder is looked for, first match wins.
LEAFLET_DIRS = (
    PACKAGE_DIR / "static" / "vendor" / "leaflet",
    PACKAGE_DIR.parents[2] / "node_modules" / "leaflet" / "dist",
)
LEAFLET_HINT = (
    "Leaflet is not installed: run `npm install` in the tiledelta repository "
    "(it reads package.json and fills node_modules/leaflet), then reload"
)
#: URL name -> (file under the dist folder, media type).
LEAFLET_FILES = {
    "leaflet.js": ("leaflet.js", "text/javascript"),
    "leaflet.js.map": ("leaflet.js.map", "application/json"),
    "leaflet.css": ("leaflet.css", "text/css"),
    **{
        f"images/{n}": (f"images/{n}", "image/png")
        for n in (
            "layers.png",
            "layers-2x.png",
            "marker-icon.png",
            "marker-icon-2x.png",
            "marker-shadow.png",
        )
    },
}
#: URL name -> (file in the run folder, media type).
RUN_FILES = {
    "summary.json": ("summary.json", "application/json"),
    "changes.geojson": ("changes.geojson", "application/geo+json"),
    "tiles.json": ("tiles.json", "application/json"),
}
#: Where ``index.html`` gets the list of service URLs (XYZ, ArcGIS REST, WMTS).
URLS_MARK = "<!-- tiledelta:service-urls -->"


def leaflet_dir() -> Path | None:
    """The folder holding ``leaflet.js`` and ``leaflet.css``, or None when not installed."""
    for d in LEAFLET_DIRS:
        if (d / "leaflet.js").is_file() and (d / "leaflet.css").is_file():
            return d
    return None


def url_list(urls: dict[str, str]) -> str:
    """The service URLs as an HTML list (``<ul>``)."""
    items = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in urls.items()
    )
    return f"<ul>{items}</ul>"


def page(index_html: Path, urls: dict[str, str]) -> str:
    """``index_html`` with the service URLs listed in place of :data:`URLS_MARK`."""
    return index_html.read_text(encoding="utf-8").replace(URLS_MARK, url_list(urls), 1)


def _changed_tiles(folder: Path) -> set[tuple[int, int, int]] | None:
    """(level, row, col) of every tile ``tiles.json`` lists, or None when unreadable."""
    try:
        levels = json.loads((folder / "tiles.json").read_text(encoding="utf-8"))["levels"]
        return {(int(lv), int(r), int(c)) for lv, rcs in levels.items() for r, c in rcs}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


_unkept_cache: dict[tuple[str, int, int], tuple[int, frozenset]] = {}


def _before_info(folder: Path) -> tuple[int, frozenset] | None:
    """(tiles kept, tiles the run changed but ``before.sqlite`` lacks) for a run folder; the
    second set is empty unless the file hit its size cap. None without the file. Cached
    per file state: the viewer asks once per tile."""
    real = confined_path(folder.parent, folder / BEFORE_FILE)
    if real is None:
        return None
    path = Path(real)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key in _unkept_cache:
        return _unkept_cache[key]
    con = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        kept = {tuple(r) for r in con.execute("SELECT level, row, col FROM tiles")}
    except sqlite3.DatabaseError:
        return None
    finally:
        con.close()
    info = (len(kept), frozenset((_changed_tiles(folder) or set()) - kept))
    _unkept_cache.clear()  # only the newest run is ever asked about
    _unkept_cache[key] = info
    return info


def routes(project: Project) -> list[Route]:
    """The viewer's routes for ``project`` (added to :func:`tiledelta.serve.app.create_app`)."""

    def run_file(request: Request) -> Response:
        entry = RUN_FILES.get(request.path_params["name"])
        if entry is None:
            return error_response(404, "no such run file")
        folder = latest_run(project)
        if folder is None:
            return error_response(404, "no run yet: run `tiledelta seed` and `tiledelta update`")
        body = read_confined(runs_dir(project), folder / entry[0])
        if body is None:
            return error_response(404, f"the last run ({folder.name}) recorded no {entry[0]}")
        return Response(body, media_type=entry[1], headers=NO_CACHE)

    def before_json(request: Request) -> Response:
        folder = latest_run(project)
        if folder is None:
            return error_response(404, "no run yet: run `tiledelta seed` and `tiledelta update`")
        info = _before_info(folder)
        if info is None:
            return error_response(404, f"the last run ({folder.name}) kept no tiles from before it")
        body = {"run": folder.name, "tiles": info[0], "complete": not info[1]}
        return json_response(body)

    def before(request: Request) -> Response:
        p = request.path_params
        m = TILE_NAME.fullmatch(p["name"])
        z, x, y = parse_int(p["z"]), parse_int(p["x"]), int(m.group(1)) if m else None
        if z is None or x is None or y is None:
            return error_response(404, "tile address out of range")
        svc = getattr(request.app.state, "service", None)
        if svc is not None and not svc.web_mercator:
            return error_response(
                404, "before tiles need the Web Mercator scheme (as /tiles/ does)"
            )
        if svc is not None and not svc.in_range(z, y, x):
            return error_response(404, "tile address out of range")
        folder = latest_run(project)
        if folder is None:
            return error_response(404, "no run yet: run `tiledelta seed` and `tiledelta update`")
        info = _before_info(folder)
        if info is None:
            return error_response(404, f"the last run ({folder.name}) kept no tiles from before it")
        try:
            known, data = before_tile(folder, z, y, x)
        except sqlite3.DatabaseError as exc:
            return error_response(500, f"{BEFORE_FILE} of run {folder.name} is unreadable ({exc})")
        if not known and (z, y, x) in info[1]:
            return error_response(404, f"the last run changed this tile but {BEFORE_FILE} is full")
        if known:
            if data is None:
                return error_response(404, "the tile did not exist before the last run")
            # Revalidated every time (max-age=0): "latest" moves with the next run.
            mtime = (folder / BEFORE_FILE).stat().st_mtime
            return tile_response(request, TileHit(bytes(data), mtime), 0)
        if svc is None:  # mounted without the tile service: let /tiles/ answer
            return RedirectResponse(f"/tiles/{z}/{x}/{p['name']}", status_code=307)
        hit = svc.tile(z, y, x)
        if hit is None:
            return error_response(404, "tile not found")
        return tile_response(request, hit, 0)

    def leaflet(request: Request) -> Response:
        entry = LEAFLET_FILES.get(request.path_params["name"])
        if entry is None:
            return error_response(404, "no such Leaflet file")
        folder = leaflet_dir()
        if folder is None:
            return error_response(404, LEAFLET_HINT)
        body = read_confined(folder, folder / entry[0])
        if body is None:
            return error_response(404, f"{entry[0]} is missing from {folder}")
        return Response(body, media_type=entry[1], headers={"Cache-Control": "max-age=3600"})

    return [
        Route("/runs/latest/before.json", before_json, methods=["GET", "HEAD"]),
        Route("/runs/latest/before/{z}/{x}/{name}", before, methods=["GET", "HEAD"]),
        Route("/runs/latest/{name}", run_file, methods=["GET", "HEAD"]),
        Route("/vendor/leaflet/{name:path}", leaflet, methods=["GET", "HEAD"]),
    ]
