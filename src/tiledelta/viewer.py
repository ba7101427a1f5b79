"""Endpoints behind the viewer page of ``tiledelta serve`` (``static/index.html``).

- ``/runs/latest/summary.json``, ``/runs/latest/changes.geojson`` and
  ``/runs/latest/tiles.json``: the newest run's files (see :mod:`tiledelta.runlog`), read
  from ``<project>/.tiledelta/runs`` only; a 404 JSON error when there is no run or the
  newest run did not record that file (a seed records no changes).
- ``/`` (through :func:`page`): ``static/index.html`` with the service URLs listed.
- ``/vendor/leaflet/...``: Leaflet's ``dist`` files, from ``node_modules/leaflet/dist``
  at the repository root (``npm install`` there, see ``package.json``) or, for a packaged
  install, from ``tiledelta/static/vendor/leaflet``. Nothing is fetched from a CDN: the
  page works offline. Only the fixed file names below are served.

Request paths are only ever matched against fixed names, never joined to a folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tiledelta.project import Project
from tiledelta.runlog import latest_run

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where Leaflet's ``dist`` folder is looked for, first match wins.
LEAFLET_DIRS = (
    PACKAGE_DIR / "static" / "vendor" / "leaflet",
    PACKAGE_DIR.parents[1] / "node_modules" / "leaflet" / "dist",
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
NO_CACHE = {"Cache-Control": "no-cache"}
#: Where ``index.html`` gets the list of service URLs (XYZ, ArcGIS REST, WMTS).
URLS_MARK = "<!-- tiledelta:service-urls -->"


def leaflet_dir() -> Path | None:
    """The folder holding ``leaflet.js`` and ``leaflet.css``, or None when not installed."""
    for d in LEAFLET_DIRS:
        if (d / "leaflet.js").is_file() and (d / "leaflet.css").is_file():
            return d
    return None


def page(index_html: Path, urls: dict[str, str]) -> str:
    """``index_html`` with the service URLs listed in place of :data:`URLS_MARK`."""
    items = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in urls.items()
    )
    return index_html.read_text(encoding="utf-8").replace(URLS_MARK, f"<ul>{items}</ul>", 1)


def _error(status: int, message: str) -> Response:
    body = json.dumps({"error": {"code": status, "message": message, "details": []}})
    return Response(body, status_code=status, media_type="application/json", headers=NO_CACHE)


def routes(project: Project) -> list[Route]:
    """The viewer's routes for ``project`` (added to :func:`tiledelta.serve.create_app`)."""

    def run_file(request: Request) -> Response:
        entry = RUN_FILES.get(request.path_params["name"])
        if entry is None:
            return _error(404, "no such run file")
        folder = latest_run(project)
        if folder is None:
            return _error(404, "no run yet: run `tiledelta seed` and `tiledelta update`")
        path = folder / entry[0]
        if not path.is_file():
            return _error(404, f"the last run ({folder.name}) recorded no {entry[0]}")
        return FileResponse(path, media_type=entry[1], headers=NO_CACHE)

    def leaflet(request: Request) -> Response:
        entry = LEAFLET_FILES.get(request.path_params["name"])
        if entry is None:
            return _error(404, "no such Leaflet file")
        folder = leaflet_dir()
        if folder is None:
            return _error(404, LEAFLET_HINT)
        path = folder / entry[0]
        if not path.is_file():
            return _error(404, f"{entry[0]} is missing from {folder}")
        return FileResponse(path, media_type=entry[1], headers={"Cache-Control": "max-age=3600"})

    return [
        Route("/runs/latest/{name}", run_file, methods=["GET", "HEAD"]),
        Route("/vendor/leaflet/{name:path}", leaflet, methods=["GET", "HEAD"]),
    ]
