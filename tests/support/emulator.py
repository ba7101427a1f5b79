"""An ArcGIS Server emulator: a real HTTP server that follows the documented REST contract.

ArcGIS Enterprise cannot run here, so tiledelta's publishing code is tested against
this stand-in. It listens on a real socket, issues expiring tokens, accepts uploads,
publishes services, and its ``Manage Map Cache Tiles`` jobs really re-render the
requested tiles with Mapnik (through tiledelta's own renderer) into the service's
own Compact Cache V2, which its ``MapServer/tile`` endpoint serves. With
``portal=True`` a minimal Portal sits beside it: portal tokens, the federated
token exchange, and items whose thumbnail, data and fields can be updated.

What it emulates, what it does not, and its own service-definition packaging are
described in ``docs/emulator.md``. Run it with::

    python -m support.emulator --root DIR   (from the tests/ folder) --port 6080 --user USER

(the password comes from ``--password`` or the ``ARCGIS_PASSWORD`` environment variable).
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import shapely

from tiledelta.errors import TileDeltaError
from tiledelta.grid import Bounds, TilingScheme, covering_tiles, tile_range
from tiledelta.stores import open_project_store

log = logging.getLogger(__name__)

CURRENT_VERSION = 11.1
REDACTED = "***"
#: Request parameters whose values never reach the request log.
SECRET_PARAMS = frozenset({"token", "password"})
ROOT_FOLDER_DIR = "@root"  # services without a folder (not a valid ArcGIS folder name)
RESERVED_FOLDERS = frozenset({"System", "Utilities"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
#: Largest number of tiles one level of one cache job may cover (the emulator's own limit).
MAX_TILES_PER_LEVEL = 4_000_000
BUNDLE = 128

SUBMITTED = "esriJobSubmitted"
EXECUTING = "esriJobExecuting"
SUCCEEDED = "esriJobSucceeded"
FAILED = "esriJobFailed"
CANCELLING = "esriJobCancelling"
CANCELLED = "esriJobCancelled"
JOB_DONE = frozenset({SUCCEEDED, FAILED, CANCELLED})
INFO = "esriJobMessageTypeInformative"
WARNING = "esriJobMessageTypeWarning"
ERROR = "esriJobMessageTypeError"

PUBLISH_TASK = "Publish Service Definition"
CACHE_TASK = "Manage Map Cache Tiles"
REPORT_TASK = "ReportCacheStatus"
CACHE_SERVICES = ("CachingControllers", "CachingTools")
UPDATE_MODES = ("RECREATE_ALL_TILES", "RECREATE_EMPTY_TILES", "DELETE_TILES")


def _param(name: str, dtype: str, display: str, required: bool, default: Any = None, **kw):
    out = {
        "name": name,
        "dataType": dtype,
        "displayName": display,
        "description": "",
        "direction": "esriGPParameterDirectionInput",
        "defaultValue": default,
        "parameterType": "esriGPParameterTypeRequired"
        if required
        else "esriGPParameterTypeOptional",
        "category": "",
    }
    out.update(kw)
    return out


#: GP services under System/, their tasks, execution type and input parameters.
GP_TASKS: dict[str, dict[str, tuple[str, list[dict]]]] = {
    "PublishingTools": {
        PUBLISH_TASK: (
            "esriExecutionTypeAsynchronous",
            [
                _param("in_sdp_id", "GPString", "Service Definition item ID", True),
                _param("in_config_overwrite", "GPString", "Configuration overwrite", False),
                _param("in_publish_options", "GPString", "Publish options", False),
            ],
        )
    },
    **{
        svc: {
            CACHE_TASK: (
                "esriExecutionTypeAsynchronous",
                [
                    _param("service_url", "GPString", "Input Map Service URL", True),
                    _param("levels", "GPString", "Scales", True),
                    _param("thread_count", "GPLong", "Number of caching service instances", True),
                    _param(
                        "update_mode",
                        "GPString",
                        "Update Mode",
                        True,
                        "RECREATE_ALL_TILES",
                        choiceList=list(UPDATE_MODES),
                    ),
                    _param("constraining_extent", "GPString", "Update Extent", False, "DEFAULT"),
                    _param(
                        "area_of_interest",
                        "GPFeatureRecordSetLayer",
                        "Area of Interest",
                        False,
                        {"geometryType": "esriGeometryPolygon", "features": []},
                    ),
                ],
            )
        }
        for svc in CACHE_SERVICES
    },
    "ReportingTools": {
        REPORT_TASK: (
            "esriExecutionTypeSynchronous",
            [
                _param("service_url", "GPString", "Input Map Service URL", True),
                _param("report_mode", "GPString", "Report Mode", False, "esriCacheStatus"),
            ],
        )
    },
}


# ----------------------------------------------------------------------------- state types


@dataclass
class Faults:
    """Faults to inject; change the attributes at any time (``emulator.faults.http_500 = 2``)."""

    #: Fail the next N requests with HTTP 500 (an HTML body, as a broken web adaptor would).
    http_500: int = 0
    #: Only requests whose path contains this string count for ``http_500`` ("" = any).
    http_500_match: str = ""
    #: Every job sleeps this long once it is executing (cancellable), before its work.
    slow_job_seconds: float = 0.0
    #: The next N submitted jobs end ``esriJobFailed`` with an error message.
    fail_next_jobs: int = 0
    #: Statistics polls that report ``busy_instances`` extra busy instances; -1 = until cleared.
    busy: int = 0
    busy_instances: int = 1
    #: Every token presented is rejected with 498 (as after a server restart or key change).
    reject_tokens: bool = False


@dataclass
class RequestRecord:
    """One request, as the emulator saw it (token and password values redacted)."""

    method: str
    path: str  # URL path, percent-decoded, without the query string
    params: dict[str, str]  # query + form fields; files as "<file NAME, N bytes>"
    token_via: str | None  # "param", "header" or None
    status: int = 0
    time: float = 0.0


@dataclass
class _Token:
    expires_ms: int
    client: str
    referer: str
    ip: str


#: Item fields an ``update`` call sets on the emulated portal item (others are recorded only).
PORTAL_ITEM_FIELDS = frozenset(
    {
        "title",
        "description",
        "snippet",
        "tags",
        "typeKeywords",
        "accessInformation",
        "licenseInfo",
        "culture",
        "url",
    }
)
_LIST_FIELDS = frozenset({"tags", "typeKeywords"})
_ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class PortalItem:
    """An item of the emulated portal: ``item.json``, its thumbnail and its data file.

    ``updates`` lists every ``update`` call it received (in memory): the form fields
    (secrets redacted), and name and size of the ``thumbnail`` and ``file`` parts.
    """

    id: str
    path: Path  # root/portal/items/<id>
    updates: list[dict[str, Any]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The item JSON, as the portal serves it."""
        return json.loads((self.path / "item.json").read_text("utf-8"))

    def _save(self, item: dict[str, Any]) -> None:
        tmp = self.path / "item.json.tmp"
        tmp.write_text(json.dumps(item, indent=1), "utf-8")
        tmp.replace(self.path / "item.json")

    def _one_file(self, sub: str) -> Path | None:
        folder = self.path / sub
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return files[0] if files else None

    @property
    def thumbnail_path(self) -> Path | None:
        return self._one_file("thumbnail")

    @property
    def data_path(self) -> Path | None:
        return self._one_file("data")

    @property
    def thumbnail(self) -> bytes | None:
        """The thumbnail's bytes, or None."""
        f = self.thumbnail_path
        return f.read_bytes() if f else None

    @property
    def data(self) -> bytes | None:
        """The item's data file (e.g. an uploaded .tpkx), or None."""
        f = self.data_path
        return f.read_bytes() if f else None


@dataclass
class Job:
    """A geoprocessing job; ``record`` holds what a cache job did (for tests)."""

    id: str
    service: str  # GP service name, e.g. "CachingControllers"
    task: str
    params: dict[str, str]  # redacted
    status: str = SUBMITTED
    messages: list[dict[str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    progress: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    submitted: float = 0.0
    finished: float | None = None
    inject_failure: bool = False
    submit_info: dict[str, Any] = field(default_factory=dict, repr=False)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def message(self, text: str, kind: str = INFO) -> None:
        self.messages.append({"type": kind, "description": text})

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobId": self.id,
            "jobStatus": self.status,
            "results": {k: {"paramUrl": f"results/{k}"} for k in self.results},
            "inputs": {
                k: {"paramUrl": f"inputs/{k}"}
                for k in self.params
                if k != "f" and k.lower() not in SECRET_PARAMS
            },
            "messages": list(self.messages),
        }
        if self.progress and self.status == EXECUTING:
            out["progress"] = {"type": "default", "message": self.progress}
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (for tests using the emulator in-process)."""
        return self.done.wait(timeout)


class JobFailed(Exception):
    """A job ends esriJobFailed with this message."""


class JobCancelled(Exception):
    """A job ends esriJobCancelled."""


@dataclass
class Service:
    """A published map service: a tiledelta project folder with its compact cache."""

    folder: str  # "" for the root folder
    name: str
    path: Path

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @property
    def cache_path(self) -> Path:
        return self.path / "cache"

    def info(self) -> dict[str, Any]:
        f = self.path / "serviceinfo.json"
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    path: str
    segments: list[str]
    params: dict[str, str]
    files: dict[str, tuple[str, bytes]]
    headers: Any
    client_ip: str
    token: str | None
    token_via: str | None

    @property
    def pretty(self) -> bool:
        return self.params.get("f", "").lower() == "pjson"


# ------------------------------------------------------------------------------ helpers


def _json(obj: Any, pretty: bool = False, status: int = 200) -> _Response:
    text = json.dumps(obj, indent=2 if pretty else None, allow_nan=False, default=str)
    return _Response(status, text.encode("utf-8"))


def rest_error(code: int, message: str, details: list[str] | None = None) -> dict:
    """The REST API's error object (sent with HTTP 200, as ArcGIS Server does)."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def admin_error(code: int, messages: list[str]) -> dict:
    """The Administrator API's error object."""
    return {"status": "error", "messages": messages, "code": code}


def _redact(params: dict[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in params.items()}


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict]:
    """(fields, files) of a multipart/form-data body; files map name -> (filename, bytes)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("multipart body without a boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        name = re.search(r'\bname="([^"]*)"', disposition)
        if not name:
            continue
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename is not None:
            files[name.group(1)] = (filename.group(1), content)
        else:
            fields[name.group(1)] = content.decode("utf-8", "replace")
    return fields, files


def esri_polygon(rings: list) -> shapely.Geometry:
    """A shapely (multi)polygon from Esri rings (outer rings and holes, any orientation).

    Rings of a valid Esri polygon do not cross, so the even-odd combination of
    the rings is the polygon, whatever nesting of islands and holes it has.
    """
    geom = None
    for ring in rings:
        coords = [(float(p[0]), float(p[1])) for p in ring]
        if len(coords) < 3:
            continue
        part = shapely.make_valid(shapely.Polygon(coords))
        geom = part if geom is None else shapely.symmetric_difference(geom, part)
    if geom is None or geom.is_empty:
        raise JobFailed("area_of_interest: the polygon has no rings with an area")
    return geom


def tiles_in_area(scheme: TilingScheme, level: int, area: shapely.Geometry) -> np.ndarray:
    """(row, col) of the tiles of ``level`` whose interior meets ``area`` (sorted, (n, 2)).

    A tile that only shares an edge or a corner with the area is left out, so an
    area drawn along tile edges covers exactly the tiles inside it.
    """
    xmin, ymin, xmax, ymax = area.bounds
    rng = tile_range(scheme, level, Bounds(xmin, ymin, xmax, ymax), touch=False)
    if rng is None:
        return np.zeros((0, 2), dtype=np.int64)
    r0, r1, c0, c1 = rng
    n = (r1 - r0 + 1) * (c1 - c0 + 1)
    if n > MAX_TILES_PER_LEVEL:
        raise JobFailed(
            f"level {level}: the area covers {n:,} tiles, more than the emulator's limit of "
            f"{MAX_TILES_PER_LEVEL:,} per level; give a smaller area_of_interest"
        )
    rows, cols = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    res = scheme.resolution(level)
    w, h = scheme.tile_width * res, scheme.tile_height * res
    x0 = scheme.origin_x + cols * w
    y1 = scheme.origin_y - rows * h
    boxes = shapely.box(x0, y1 - h, x0 + w, y1)
    shapely.prepare(area)
    hit = shapely.intersects(area, boxes) & ~shapely.touches(area, boxes)
    return np.column_stack([rows[hit], cols[hit]]).astype(np.int64)


def _wkid(sr: Any) -> int | str | None:
    """A comparable id for an Esri spatialReference (Web Mercator ids folded into 3857)."""
    if not isinstance(sr, dict) or not sr:
        return None
    from tiledelta.grid import WEB_MERCATOR_WKIDS

    for key in ("latestWkid", "wkid"):
        v = sr.get(key)
        if v is not None:
            try:
                v = int(v)
            except (TypeError, ValueError):
                continue
            return 3857 if v in WEB_MERCATOR_WKIDS else v
    wkt = sr.get("wkt") or sr.get("wkt2")
    if wkt:
        import pyproj

        try:
            epsg = pyproj.CRS.from_user_input(wkt).to_epsg()
        except pyproj.exceptions.CRSError:
            return str(wkt)
        return 3857 if epsg in WEB_MERCATOR_WKIDS else (epsg or str(wkt))
    return None


def _sr_name(sr: Any) -> str:
    if isinstance(sr, dict):
        for key in ("wkid", "latestWkid"):
            if sr.get(key) is not None:
                return f"wkid {sr[key]}"
        if sr.get("wkt"):
            return "a WKT spatial reference"
    return "no spatial reference"


def _safe_filename(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return base or "upload.bin"


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return "application/octet-stream"


# ------------------------------------------------------------------------------ emulator


class Emulator:
    """An ArcGIS Server site on ``host:port`` whose state lives under ``root``.

    ``root/services/<Folder>/<Name>/`` holds each service (a tiledelta project and its
    ``cache/``), ``root/uploads/<itemID>/`` the uploaded files and ``root/jobs/<jobId>/``
    each job's JSON. ``requests`` logs every request (secrets redacted), ``jobs`` maps job
    ids to :class:`Job`, and ``faults`` (a :class:`Faults`) injects failures.
    """

    def __init__(
        self,
        root: Path,
        *,
        username: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 0,
        site: str = "arcgis",
        token_minutes: int = 60,
        max_token_minutes: int = 1440,
        faults: Faults | None = None,
        portal: bool = False,
        portal_site: str = "portal",
    ) -> None:
        if not username or not password:
            raise ValueError("the emulator needs a username and a password")
        if portal and portal_site.strip("/") == site.strip("/"):
            raise ValueError("the portal and the server need different site names")
        self.root = Path(root).resolve()
        self.username = username
        self._password = password
        self.host = host
        self.port = port
        self.site = site.strip("/")
        self.token_minutes = token_minutes
        self.max_token_minutes = max(max_token_minutes, token_minutes)
        self.faults = faults or Faults()
        self.requests: list[RequestRecord] = []
        self.jobs: dict[str, Job] = {}
        #: Epoch seconds; tests may replace it to move the emulator's clock.
        self.clock: Callable[[], float] = time.time
        self._tokens: dict[str, _Token] = {}
        #: Emulated Portal: on or off, its path segment, its tokens and items.
        self.portal = portal
        self.portal_site = portal_site.strip("/")
        self._portal_tokens: dict[str, _Token] = {}
        self.portal_items: dict[str, PortalItem] = {}
        self._lock = threading.RLock()
        self._service_locks: dict[str, threading.Lock] = {}
        self._readers: dict[str, tuple[tuple, Any]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._cache_jobs_run = 0
        for sub in ("services", "uploads", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if portal:
            items = self.root / "portal" / "items"
            items.mkdir(parents=True, exist_ok=True)
            for d in sorted(items.iterdir()):
                if _ITEM_ID_RE.match(d.name) and (d / "item.json").is_file():
                    self.portal_items[d.name] = PortalItem(d.name, d)

    def __repr__(self) -> str:  # never shows the password
        return f"<Emulator {self.url if self._server else self.root} user={self.username!r}>"

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The site URL, e.g. ``http://127.0.0.1:6080/arcgis``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{self.site}"

    @property
    def portal_url(self) -> str:
        """The portal URL, e.g. ``http://127.0.0.1:6080/portal`` (``portal=True`` only)."""
        if not self.portal:
            raise AttributeError("this emulator has no portal (start it with portal=True)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/{self.portal_site}"

    def start(self) -> Emulator:
        """Listen and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="arcgis-emulator", daemon=True
        )
        self._thread.start()
        log.info("ArcGIS emulator listening at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cancel running jobs and wait briefly for them."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        for job in list(self.jobs.values()):
            if job.status not in JOB_DONE:
                job.cancel_event.set()
        for job in list(self.jobs.values()):
            job.done.wait(timeout=10)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- tokens -----------------------------------------------------------------------------
    def expire_tokens_now(self) -> None:
        """Every token issued so far becomes invalid (requests using it get 498)."""
        with self._lock:
            self._tokens.clear()
            self._portal_tokens.clear()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _check_token(self, req: _Request, tokens: dict[str, _Token] | None = None) -> int | None:
        """None when the request carries a valid token, else 499 (missing) or 498 (invalid).

        ``tokens`` is the server's tokens by default; the portal passes its own, so a
        portal token is refused by the server and a server token by the portal.
        """
        if not req.token:
            return 499
        if self.faults.reject_tokens:
            return 498
        with self._lock:
            tok = (self._tokens if tokens is None else tokens).get(req.token)
        if tok is None or tok.expires_ms <= self._now_ms():
            return 498
        if tok.client == "referer":
            sent = (req.headers.get("Referer") or "").rstrip("/")
            if not sent or not sent.startswith(tok.referer.rstrip("/")):
                return 498
        elif tok.client in ("ip", "requestip") and req.client_ip != tok.ip:
            return 498
        return None

    def _generate_token(self, req: _Request, admin: bool) -> dict:
        def fail(detail: str, code: int = 400) -> dict:
            if admin:
                return admin_error(code, ["Unable to generate token.", detail])
            return rest_error(code, "Unable to generate token.", [detail])

        if req.method != "POST":
            return fail("generateToken must be called with POST; GET is not enabled.", 405)
        p = req.params
        user, password = p.get("username", ""), p.get("password", "")
        if not self._credentials_ok(user, password):
            return fail("Invalid username or password.")
        return self._issue_token(req, self._tokens, fail)

    def _credentials_ok(self, user: str, password: str) -> bool:
        ok_user = hmac.compare_digest(user.encode(), self.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self._password.encode())
        return ok_user and ok_pass

    def _issue_token(
        self,
        req: _Request,
        tokens: dict[str, _Token],
        fail: Callable[..., dict],
        *,
        inherit: _Token | None = None,
    ) -> dict:
        """A new token in ``tokens``, bound as ``client``/``referer``/``ip`` ask.

        With ``inherit`` (the federated exchange) a request that names no client keeps
        the portal token's binding, and the new token expires no later than that one.
        """
        p = req.params
        referer = p.get("referer", "")
        if inherit is not None and not p.get("client") and not referer:
            client, referer, ip = inherit.client, inherit.referer, inherit.ip
        else:
            client = (p.get("client") or ("referer" if referer else "requestip")).lower()
            if client not in ("referer", "ip", "requestip"):
                return fail(f"Invalid client type '{client}'; use referer, ip or requestip.")
            if client == "referer" and not referer:
                return fail("The referer parameter is required when client is referer.")
            ip = p.get("ip", "") if client == "ip" else req.client_ip
            if client == "ip" and not ip:
                return fail("The ip parameter is required when client is ip.")
        try:
            minutes = float(p.get("expiration") or self.token_minutes)
        except ValueError:
            return fail("The expiration must be a number of minutes.")
        if minutes <= 0:
            return fail("The expiration must be a positive number of minutes.")
        minutes = min(minutes, self.max_token_minutes)
        expires = self._now_ms() + int(minutes * 60_000)
        if inherit is not None:
            expires = min(expires, inherit.expires_ms)
        value = secrets.token_urlsafe(48)
        with self._lock:
            tokens[value] = _Token(expires, client, referer, ip)
        return {"token": value, "expires": expires, "ssl": False}

    # -- services ---------------------------------------------------------------------------
    def service(self, folder: str, name: str) -> Service:
        """The service ``folder/name`` (it may not exist yet)."""
        return Service(folder, name, self.root / "services" / (folder or ROOT_FOLDER_DIR) / name)

    def services(self) -> list[Service]:
        """Published services, sorted by folder and name."""
        out = []
        base = self.root / "services"
        for fdir in sorted(p for p in base.iterdir() if p.is_dir()):
            for sdir in sorted(p for p in fdir.iterdir() if p.is_dir()):
                if (sdir / "tiledelta.toml").is_file() and _NAME_RE.match(sdir.name):
                    folder = "" if fdir.name == ROOT_FOLDER_DIR else fdir.name
                    out.append(Service(folder, sdir.name, sdir))
        return out

    def _find_service(self, folder: str, name: str) -> Service | None:
        svc = self.service(folder, name)
        if not (_NAME_RE.match(name) and (not folder or _NAME_RE.match(folder))):
            return None
        return svc if (svc.path / "tiledelta.toml").is_file() else None

    def _service_from_url(self, value: str) -> Service:
        """The service a GP ``service_url`` names ("Folder/Name:MapServer" or a REST URL)."""
        text = value.strip()
        if "/rest/services/" in text:
            text = text.split("/rest/services/", 1)[1].split("?")[0].rstrip("/")
            text = re.sub(r"/MapServer$", ":MapServer", text)
        m = re.fullmatch(r"(?:([A-Za-z0-9_]+)/)?([A-Za-z0-9_]+)[:.]MapServer", text)
        if not m:
            raise JobFailed(f"service_url {value!r} is not of the form 'Folder/Name:MapServer'")
        svc = self._find_service(m.group(1) or "", m.group(2))
        if svc is None:
            raise JobFailed(f"Service {text.replace(':', '.')} not found")
        return svc

    def _service_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._service_locks.setdefault(key, threading.Lock())

    def _project(self, svc: Service):
        from tiledelta.project import Project

        return Project.load(svc.path)

    def _reader(self, svc: Service):
        """A read-only view of the service's compact cache (reopened when conf.xml changes)."""
        from tiledelta.stores import read_compact_cache

        conf = svc.cache_path / "conf.xml"
        try:
            st = conf.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._readers.get(svc.key)
            if hit and hit[0] == stamp:
                return hit[1]
        reader = read_compact_cache(svc.cache_path)
        with self._lock:
            self._readers[svc.key] = (stamp, reader)
        return reader

    # -- request handling -------------------------------------------------------------------
    def _take_500(self, path: str) -> bool:
        with self._lock:
            f = self.faults
            if f.http_500 > 0 and (not f.http_500_match or f.http_500_match in path):
                f.http_500 -= 1
                return True
        return False

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(h.path)
        body = _read_body(h)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        files: dict[str, tuple[str, bytes]] = {}
        ctype = h.headers.get("Content-Type", "")
        bad_body = None
        if method == "POST" and body:
            if ctype.startswith("multipart/form-data"):
                try:
                    fields, files = parse_multipart(body, ctype)
                    params.update(fields)
                except ValueError as exc:
                    bad_body = str(exc)
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        token, via = params.get("token") or None, "param" if params.get("token") else None
        if token is None:
            auth = h.headers.get("X-Esri-Authorization", "")
            if auth.lower().startswith("bearer ") and auth[7:].strip():
                token, via = auth[7:].strip(), "header"
        path = unquote(split.path)
        logged = _redact(params)
        for name, (fname, data) in files.items():
            logged[name] = f"<file {fname}, {len(data)} bytes>"
        rec = RequestRecord(method, path, logged, via, time=time.time())
        with self._lock:
            self.requests.append(rec)
        req = _Request(
            method=method,
            path=path,
            segments=[s for s in path.split("/") if s],
            params=params,
            files=files,
            headers=h.headers,
            client_ip=h.client_address[0],
            token=token,
            token_via=via,
        )
        if self._take_500(path):
            resp = _Response(
                500,
                b"<html><body><h1>500 Internal Server Error</h1>(injected fault)</body></html>",
                "text/html; charset=utf-8",
            )
        elif bad_body:
            resp = _json(rest_error(400, "Unable to complete operation.", [bad_body]))
        else:
            try:
                resp = self._route(req)
            except Exception:
                log.exception("emulator: %s %s failed", method, path)
                resp = _json(rest_error(500, "Unable to complete operation.", ["Internal error."]))
        rec.status = resp.status
        log.debug("%s %s -> %s", method, path, resp.status)
        _write_response(h, resp, head_only=method == "HEAD")

    def _route(self, req: _Request) -> _Response:
        seg = req.segments
        if self.portal and seg and seg[0] == self.portal_site:
            return self._portal(req, seg[1:])
        if not seg or seg[0] != self.site:
            return _json(rest_error(404, "Not found", [f"the site is /{self.site}"]), status=404)
        seg = seg[1:]
        if seg == ["tokens", "generateToken"]:
            return _json(self._generate_token(req, admin=False), req.pretty)
        if seg == ["admin", "generateToken"]:
            return _json(self._generate_token(req, admin=True), req.pretty)
        if seg == ["rest", "info"]:
            return _json(self._rest_info(), req.pretty)
        if seg[:1] == ["admin"]:
            return self._admin(req, seg[1:])
        if seg[:2] == ["rest", "services"]:
            return self._rest(req, seg[2:])
        return _json(rest_error(404, "Not found", [req.path]), status=404)

    def _rest_info(self) -> dict:
        out: dict[str, Any] = {
            "currentVersion": CURRENT_VERSION,
            "fullVersion": f"{CURRENT_VERSION}.0",
            "authInfo": {
                "isTokenBasedSecurity": True,
                "tokenServicesUrl": f"{self.url}/tokens/generateToken",
                "shortLivedTokenValidity": self.token_minutes,
            },
        }
        if self.portal:  # a federated server names its portal and the portal's token URL
            out["owningSystemUrl"] = self.portal_url
            out["authInfo"]["tokenServicesUrl"] = f"{self.portal_url}/sharing/rest/generateToken"
        return out

    # -- the emulated Portal ----------------------------------------------------------------
    def portal_add_item(
        self,
        owner: str,
        type: str,
        title: str,
        **fields: Any,
    ) -> str:
        """Create a portal item owned by ``owner``; return its id (32 hex digits).

        ``fields`` may set other item fields (``description``, ``tags`` ...). Only
        items owned by the emulator's user can be updated or read through REST.
        """
        if not self.portal:
            raise RuntimeError("this emulator has no portal (start it with portal=True)")
        item_id = uuid.uuid4().hex
        folder = self.root / "portal" / "items" / item_id
        folder.mkdir(parents=True)
        now = int(self.clock() * 1000)
        item: dict[str, Any] = {
            "id": item_id,
            "owner": owner,
            "created": now,
            "modified": now,
            "title": title,
            "type": type,
            "typeKeywords": [],
            "name": None,
            "description": None,
            "snippet": None,
            "tags": [],
            "thumbnail": None,
            "url": None,
            "access": "private",
            "size": 0,
        }
        item.update(fields)
        it = PortalItem(item_id, folder)
        it._save(item)
        with self._lock:
            self.portal_items[item_id] = it
        return item_id

    def portal_item(self, item_id: str) -> PortalItem:
        """The portal item ``item_id`` (KeyError when there is none)."""
        return self.portal_items[item_id]

    def _portal(self, req: _Request, seg: list[str]) -> _Response:
        p = req.pretty
        if seg[:2] != ["sharing", "rest"]:
            return _json(rest_error(404, "Not found", [req.path]), status=404)
        seg = seg[2:]
        if seg == ["generateToken"]:
            return _json(self._portal_generate_token(req), p)
        if seg == ["info"]:
            return _json(
                {
                    "owningSystemUrl": self.portal_url,
                    "authInfo": {
                        "tokenServicesUrl": f"{self.portal_url}/sharing/rest/generateToken",
                        "isTokenBasedSecurity": True,
                    },
                },
                p,
            )
        denied = self._check_token(req, self._portal_tokens)
        if denied == 499:
            return _json(rest_error(499, "Token Required."), p)
        if denied == 498:
            return _json(rest_error(498, "Invalid token."), p)
        # content/users/<user>/items/<id>[/update]
        if len(seg) in (5, 6) and seg[:2] == ["content", "users"] and seg[3] == "items":
            user, item_id, op = seg[2], seg[4], seg[5:]
            it, err = self._portal_lookup(item_id, user)
            if err is not None:
                return _json(err, p)
            if op == ["update"]:
                if req.method != "POST":
                    return _json(rest_error(405, "update takes POST only."), p)
                return _json(self._portal_update(req, it), p)
            if not op:
                return _json({"item": it.info(), "sharing": {"access": "private", "groups": []}}, p)
        # content/items/<id>[/data | /info/<thumbnail path>]
        if len(seg) >= 3 and seg[:2] == ["content", "items"]:
            it, err = self._portal_lookup(seg[2], None)
            if err is not None:
                return _json(err, p)
            rest = seg[3:]
            if not rest:
                return _json(it.info(), p)
            if rest == ["data"]:
                f = it.data_path
                if f is None:
                    return _json(rest_error(400, "Item has no data.", [it.id]), p)
                data = f.read_bytes()
                return _Response(
                    200,
                    data,
                    _content_type(data),
                    {"Content-Disposition": f'attachment; filename="{f.name}"'},
                )
            if rest[:1] == ["info"] and rest[1:] == (it.info().get("thumbnail") or "").split("/"):
                data = it.thumbnail
                if data is not None:
                    return _Response(200, data, _content_type(data))
            return _json(rest_error(404, "Not found", [req.path]), status=404)
        return _json(rest_error(400, "Not implemented by the emulator's portal.", [req.path]), p)

    def _portal_lookup(
        self, item_id: str, user: str | None
    ) -> tuple[PortalItem, None] | tuple[None, dict]:
        """The item, or the error a private item someone else owns gets."""
        with self._lock:
            it = self.portal_items.get(item_id)
        if it is None or not _ITEM_ID_RE.match(item_id):
            return None, rest_error(400, "Item does not exist or is inaccessible.", [item_id])
        owner = it.info().get("owner")
        if owner != self.username or (user is not None and user != owner):
            return None, rest_error(
                403,
                "You do not have permissions to access this resource or perform this operation.",
            )
        return it, None

    def _portal_generate_token(self, req: _Request) -> dict:
        def fail(detail: str, code: int = 400) -> dict:
            return rest_error(code, "Unable to generate token.", [detail])

        if req.method != "POST":
            return fail("generateToken must be called with POST; GET is not enabled.", 405)
        params = req.params
        server_url = params.get("serverUrl", "").strip().rstrip("/")
        if params.get("username") or params.get("password"):
            if not self._credentials_ok(params.get("username", ""), params.get("password", "")):
                return fail("Invalid username or password.")
            if server_url:
                return fail("Sign in to the portal first, then exchange its token (serverUrl).")
            return self._issue_token(req, self._portal_tokens, fail)
        # The federated exchange: a portal token (param or header) + serverUrl -> server token.
        if not req.token:
            return rest_error(499, "Token Required.")
        if not server_url:
            return fail("Give username and password, or token and serverUrl.")
        if self._check_token(req, self._portal_tokens) is not None:
            return rest_error(498, "Invalid token.")
        if server_url != self.url and not server_url.startswith(self.url + "/"):
            return fail(f"{server_url} is not a server federated with this portal.")
        with self._lock:
            portal_tok = self._portal_tokens[req.token]
        return self._issue_token(req, self._tokens, fail, inherit=portal_tok)

    def _portal_update(self, req: _Request, it: PortalItem) -> dict:
        item = it.info()
        record: dict[str, Any] = {
            "time": self._now_ms(),
            "fields": {},
            "thumbnail": None,
            "file": None,
        }
        for key, value in _redact(req.params).items():
            if key in ("f", "token"):
                continue
            record["fields"][key] = value
            if key in PORTAL_ITEM_FIELDS:
                item[key] = (
                    [v.strip() for v in value.split(",") if v.strip()]
                    if key in _LIST_FIELDS
                    else value
                )
        if "thumbnail" in req.files:
            fname, data = req.files["thumbnail"]
            if not data:
                return rest_error(400, "The thumbnail file is empty.")
            name = _safe_filename(fname or "thumbnail.png")
            folder = it.path / "thumbnail"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / name).write_bytes(data)
            item["thumbnail"] = f"thumbnail/{name}"
            record["thumbnail"] = {"name": name, "size": len(data)}
        if "file" in req.files:
            fname, data = req.files["file"]
            name = _safe_filename(fname or "data.bin")
            folder = it.path / "data"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / name).write_bytes(data)
            item["name"], item["size"] = name, len(data)
            record["file"] = {"name": name, "size": len(data)}
        item["modified"] = self._now_ms()
        it._save(item)
        with self._lock:
            it.updates.append(record)
        return {"success": True, "id": it.id}

    # -- /rest/services ---------------------------------------------------------------------
    def _rest(self, req: _Request, seg: list[str]) -> _Response:
        denied = self._check_token(req)
        if denied == 499:
            return _json(rest_error(499, "Token Required"), req.pretty)
        if denied == 498:
            return _json(rest_error(498, "Invalid Token"), req.pretty)
        if "MapServer" in seg:
            i = seg.index("MapServer")
            return self._mapserver(req, seg[:i], seg[i + 1 :])
        if "GPServer" in seg:
            i = seg.index("GPServer")
            return self._gpserver(req, seg[:i], seg[i + 1 :])
        if not seg:
            return _json(self._catalog(""), req.pretty)
        if len(seg) == 1:
            cat = self._catalog(seg[0])
            if cat is None:
                return _json(rest_error(404, "Folder not found", [seg[0]]), req.pretty)
            return _json(cat, req.pretty)
        return _json(rest_error(400, "Invalid URL", [req.path]), req.pretty)

    def _catalog(self, folder: str) -> dict | None:
        services = self.services()
        if not folder:
            folders = sorted({s.folder for s in services if s.folder} | RESERVED_FOLDERS)
            listed = [{"name": s.name, "type": "MapServer"} for s in services if not s.folder]
            return {"currentVersion": CURRENT_VERSION, "folders": folders, "services": listed}
        if folder == "System":
            listed = [{"name": f"System/{n}", "type": "GPServer"} for n in sorted(GP_TASKS)]
        elif folder == "Utilities":
            listed = []
        else:
            listed = [{"name": s.key, "type": "MapServer"} for s in services if s.folder == folder]
            if not listed:
                return None
        return {"currentVersion": CURRENT_VERSION, "folders": [], "services": listed}

    def _mapserver(self, req: _Request, where: list[str], rest: list[str]) -> _Response:
        svc = None
        if len(where) in (1, 2):
            folder, name = (where[0], where[1]) if len(where) == 2 else ("", where[0])
            svc = self._find_service(folder, name)
        if svc is None:
            detail = f"Service {'/'.join(where)}/MapServer not found"
            if rest[:1] == ["tile"]:
                return _json(rest_error(404, "Service not found", [detail]), status=404)
            return _json(rest_error(404, "Service not found", [detail]), req.pretty)
        if not rest:
            return _json(self._mapserver_info(svc), req.pretty)
        if rest[0] == "tile" and len(rest) == 4:
            return self._tile(svc, rest[1:])
        return _json(
            rest_error(
                400,
                "Unable to complete operation.",
                [f"MapServer/{'/'.join(rest)} is not implemented by the emulator"],
            ),
            req.pretty,
        )

    def _tile(self, svc: Service, parts: list[str]) -> _Response:
        try:
            level, row, col = (int(p) for p in parts)
        except ValueError:
            return _json(rest_error(400, "Invalid URL", ["tile/{level}/{row}/{col}"]), status=400)
        reader = self._reader(svc)
        data = None
        if reader is not None and row >= 0 and col >= 0:
            try:
                data = reader.get(level, row, col)
            except TileDeltaError as exc:
                log.warning("tile %s/%d/%d/%d: %s", svc.key, level, row, col, exc)
        if data is None:
            return _json(rest_error(404, "Tile not found"), status=404)
        return _Response(200, data, _content_type(data), {"Cache-Control": "no-cache"})

    def _mapserver_info(self, svc: Service) -> dict:
        from tiledelta.grid import scheme_meters_per_unit, scheme_to_tile_info, tile_format

        project = self._project(svc)
        scheme = project.cache_scheme
        cache = project.config.cache
        fmt = tile_format(cache.format).esri
        tile_info = scheme_to_tile_info(scheme)
        tile_info["format"] = fmt
        tile_info["compressionQuality"] = cache.quality if fmt in ("JPEG", "MIXED") else 0
        sr = tile_info["spatialReference"]
        meta = svc.info()
        ext = meta.get("extent") or (list(scheme.extent) if scheme.extent else None)
        if ext:
            envelope = dict(zip(("xmin", "ymin", "xmax", "ymax"), ext, strict=True))
        else:
            envelope = {"xmin": None, "ymin": None, "xmax": None, "ymax": None}
        envelope["spatialReference"] = sr
        levels = project.levels
        mpu = scheme_meters_per_unit(scheme)
        units = (
            "esriMeters"
            if math.isclose(mpu, 1.0)
            else "esriFeet"
            if math.isclose(mpu, 0.3048, rel_tol=1e-5)
            else "esriUnknownUnits"
        )
        return {
            "currentVersion": CURRENT_VERSION,
            "serviceDescription": meta.get("description", ""),
            "mapName": svc.name,
            "description": meta.get("description", ""),
            "copyrightText": "",
            "supportsDynamicLayers": False,
            "layers": [
                {
                    "id": i,
                    "name": lyr.name,
                    "parentLayerId": -1,
                    "defaultVisibility": True,
                    "subLayerIds": None,
                    "minScale": 0,
                    "maxScale": 0,
                }
                for i, lyr in enumerate(project.style.layers)
            ],
            "tables": [],
            "spatialReference": sr,
            "singleFusedMapCache": True,
            "tileInfo": tile_info,
            "storageInfo": {
                "storageFormat": "esriMapCacheStorageModeCompactV2",
                "packetSize": BUNDLE,
            },
            "initialExtent": dict(envelope),
            "fullExtent": dict(envelope),
            "minScale": scheme.lod(min(levels)).scale,
            "maxScale": scheme.lod(max(levels)).scale,
            "minLOD": min(levels),
            "maxLOD": max(levels),
            "units": units,
            "supportedImageFormatTypes": "PNG32,PNG24,PNG,JPG,DIB,TIFF,EMF,PS,PDF,GIF,SVG,SVGZ,BMP",
            "capabilities": "Map,Query,Data",
            "exportTilesAllowed": False,
            "cacheType": "Map",
        }

    # -- GP services ------------------------------------------------------------------------
    def _gpserver(self, req: _Request, where: list[str], rest: list[str]) -> _Response:
        p = req.pretty
        if len(where) != 2 or where[0] != "System" or where[1] not in GP_TASKS:
            return _json(rest_error(404, "Service not found", ["/".join(where)]), p)
        gp = where[1]
        tasks = GP_TASKS[gp]
        if not rest:
            kinds = {v[0] for v in tasks.values()}
            return _json(
                {
                    "currentVersion": CURRENT_VERSION,
                    "serviceDescription": f"{gp} (tiledelta emulator)",
                    "tasks": sorted(tasks),
                    "executionType": kinds.pop() if len(kinds) == 1 else "",
                    "resultMapServerName": "",
                    "maximumRecords": 1000,
                },
                p,
            )
        if rest[0] == "jobs":
            return self._job_resource(req, gp, None, rest[1:])
        task = rest[0]
        if task not in tasks:
            return _json(rest_error(400, "Invalid URL", [f"no task {task!r} in System/{gp}"]), p)
        kind, parameters = tasks[task]
        if len(rest) == 1:
            return _json(
                {
                    "name": task.replace(" ", ""),
                    "displayName": task,
                    "description": "",
                    "category": "",
                    "helpUrl": "",
                    "executionType": kind,
                    "parameters": parameters,
                },
                p,
            )
        op = rest[1]
        if op == "jobs":
            return self._job_resource(req, gp, task, rest[2:])
        if op == "submitJob" and len(rest) == 2:
            if kind != "esriExecutionTypeAsynchronous":
                return _json(
                    rest_error(
                        400,
                        "Unable to complete operation.",
                        [f"{task} is synchronous: use execute"],
                    ),
                    p,
                )
            return _json(self._submit(gp, task, req.params).submit_info, p)
        if op == "execute" and len(rest) == 2:
            if kind != "esriExecutionTypeSynchronous":
                return _json(
                    rest_error(
                        400,
                        "Unable to complete operation.",
                        [f"{task} is asynchronous: use submitJob"],
                    ),
                    p,
                )
            return _json(self._report_cache_status(req.params), p)
        return _json(rest_error(400, "Invalid URL", [req.path]), p)

    def _job_resource(self, req: _Request, gp: str, task: str | None, rest: list[str]) -> _Response:
        p = req.pretty
        job = self.jobs.get(rest[0]) if rest else None
        if job is None or job.service != gp or (task is not None and job.task != task):
            return _json(rest_error(400, "Job not found", [rest[0] if rest else ""]), p)
        if len(rest) == 1:
            return _json(job.info(), p)
        if rest[1:] == ["cancel"]:
            with self._lock:
                if job.status not in JOB_DONE:
                    job.cancel_event.set()
                    if job.status == EXECUTING:
                        job.status = CANCELLING
            return _json({"jobId": job.id, "jobStatus": job.status}, p)
        if len(rest) == 3 and rest[1] == "results" and rest[2] in job.results:
            return _json(
                {"paramName": rest[2], "dataType": "GPString", "value": job.results[rest[2]]}, p
            )
        if len(rest) == 3 and rest[1] == "inputs" and rest[2] in job.params:
            return _json(
                {"paramName": rest[2], "dataType": "GPString", "value": job.params[rest[2]]}, p
            )
        return _json(rest_error(400, "Invalid URL", [req.path]), p)

    # -- jobs -------------------------------------------------------------------------------
    def _submit(self, gp: str, task: str, params: dict[str, str]) -> Job:
        with self._lock:
            inject = self.faults.fail_next_jobs > 0
            if inject:
                self.faults.fail_next_jobs -= 1
            job = Job(
                id="j" + uuid.uuid4().hex,
                service=gp,
                task=task,
                params=_redact(params),
                submitted=time.time(),
                inject_failure=inject,
            )
            self.jobs[job.id] = job
        job.message(f"Submitted. ({task}, tiledelta emulator)")
        job.submit_info = {"jobId": job.id, "jobStatus": SUBMITTED}
        work = self._publish_job if task == PUBLISH_TASK else self._cache_job
        args = {k: v for k, v in params.items() if k.lower() not in SECRET_PARAMS}
        threading.Thread(
            target=self._run_job, args=(job, work, args), name=f"job-{job.id[:9]}", daemon=True
        ).start()
        return job

    def _run_job(self, job: Job, work, params: dict[str, str]) -> None:
        t0 = time.perf_counter()
        end: tuple[str, list[tuple[str, str]]]
        try:
            work(job, params)
        except JobCancelled:
            end = (CANCELLED, [("Cancelled. Tiles written before the cancel were kept.", WARNING)])
        except JobFailed as exc:
            end = (FAILED, [(str(exc), ERROR), ("Failed.", ERROR)])
        except Exception as exc:  # a bug or an unexpected data problem: report, do not crash
            log.exception("emulator job %s failed", job.id)
            end = (FAILED, [(f"{type(exc).__name__}: {exc}", ERROR), ("Failed.", ERROR)])
        else:
            took = time.perf_counter() - t0
            end = (SUCCEEDED, [(f"Succeeded (elapsed time: {took:.2f} seconds).", INFO)])
        try:
            with self._lock:
                for text, kind in end[1]:
                    job.message(text, kind)
                job.status = end[0]
        finally:
            job.progress = None
            job.finished = time.time()
            self._save_job(job)
            job.done.set()

    def _save_job(self, job: Job) -> None:
        folder = self.root / "jobs" / job.id
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            record = {k: (sorted(v) if isinstance(v, set) else v) for k, v in job.record.items()}
            doc = {**job.info(), "task": job.task, "service": job.service, "record": record}
            (folder / "job.json").write_text(json.dumps(doc, indent=1, default=list), "utf-8")

    def _begin(self, job: Job) -> None:
        """The job starts executing: apply the slow and failure faults, honour a cancel."""
        with self._lock:
            if job.cancel_event.is_set():
                raise JobCancelled()
            job.status = EXECUTING
            job.message("Executing...")
        delay = float(self.faults.slow_job_seconds or 0)
        deadline = time.monotonic() + delay
        while delay > 0 and (left := deadline - time.monotonic()) > 0:
            if job.cancel_event.wait(min(left, 0.05)):
                raise JobCancelled()
        if job.inject_failure:
            raise JobFailed("Injected failure (emulator fault fail_next_jobs).")

    def _checkpoint(self, job: Job) -> None:
        if job.cancel_event.is_set():
            raise JobCancelled()

    # -- publishing -------------------------------------------------------------------------
    def _upload_file(self, item_id: str) -> Path | None:
        if not re.fullmatch(r"i[0-9a-f]{32}", item_id or ""):
            return None
        folder = self.root / "uploads" / item_id
        files = (
            [p for p in folder.iterdir() if p.is_file() and p.name != "item.json"]
            if (folder.is_dir())
            else []
        )
        return files[0] if files else None

    def _publish_job(self, job: Job, params: dict[str, str]) -> None:
        item = params.get("in_sdp_id", "").strip()
        upload = self._upload_file(item)
        if upload is None:
            raise JobFailed(f"Item {item or '(none)'} not found among the uploads (in_sdp_id)")
        try:
            zf = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, OSError):
            raise JobFailed(
                f"{upload.name} is not a service definition this emulator can read: it expects "
                "a zip holding a tiledelta project and serviceinfo.json (docs/emulator.md); "
                "real .sd files (7z with an .sddraft) are not supported"
            ) from None
        with zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            prefix = ""
            if "serviceinfo.json" not in names:
                tops = [n for n in names if n.count("/") == 1 and n.endswith("/serviceinfo.json")]
                if len(tops) != 1:
                    raise JobFailed(f"{upload.name}: no serviceinfo.json at the top of the zip")
                prefix = tops[0][: -len("serviceinfo.json")]
            try:
                info = json.loads(zf.read(prefix + "serviceinfo.json"))
            except ValueError as exc:
                raise JobFailed(
                    f"{upload.name}: serviceinfo.json is not valid JSON ({exc})"
                ) from None
            if not isinstance(info, dict):
                raise JobFailed(f"{upload.name}: serviceinfo.json must be a JSON object")
            folder, name = str(info.get("folder") or ""), str(info.get("name") or "")
            keep = info.get("keepExistingMapCache", False) is True
            if not _NAME_RE.match(name) or (folder and not _NAME_RE.match(folder)):
                raise JobFailed(
                    f"serviceinfo.json: folder {folder!r} / name {name!r} must use letters, "
                    "digits and underscores only"
                )
            if folder in RESERVED_FOLDERS:
                raise JobFailed(f"serviceinfo.json: the {folder} folder is reserved")
            svc = self.service(folder, name)
            with self._service_lock(svc.key):
                self._begin(job)
                job.record.update({"service": svc.key, "keepExistingMapCache": keep})
                self._publish(job, zf, prefix, names, svc, keep, info)
        job.results["out_service_url"] = f"{self.url}/rest/services/{svc.key}/MapServer"

    def _publish(self, job, zf, prefix, names, svc: Service, keep: bool, info: dict) -> None:
        from tiledelta.api import load_project
        from tiledelta.project import Project
        from tiledelta.sources import data_extent, read_layers

        svc.path.parent.mkdir(parents=True, exist_ok=True)
        staging = svc.path.parent / f".{svc.name}.staging-{secrets.token_hex(4)}"
        old_cache = svc.cache_path
        moved = False
        try:
            for n in names:
                rel = n[len(prefix) :]
                parts = Path(rel).parts
                if not rel or rel.startswith("/") or ".." in parts or ":" in parts[0]:
                    raise JobFailed(f"the zip holds an unsafe path: {n}")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(n) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            if not (staging / "tiledelta.toml").is_file():
                raise JobFailed("the service definition holds no tiledelta.toml")
            shutil.rmtree(staging / ".tiledelta", ignore_errors=True)
            project = Project.load(staging)
            cfg = project.config.cache
            if cfg.kind != "compact" or cfg.path != "cache":
                cfg.kind, cfg.path = "compact", "cache"
                project.save()
                job.message(
                    "The service caches into a Compact Cache V2 in cache/ (set by the server)."
                )
            project = load_project(staging)
            for lyr in project.style.layers:
                src_path = Path(lyr.path)
                if lyr.path.startswith("PG:") or not src_path.resolve().is_relative_to(
                    staging.resolve()
                ):
                    raise JobFailed(
                        f"layer {lyr.name!r} reads {lyr.path}, which is not inside the service "
                        "definition; copy the data into the .sd"
                    )
            sd_cache = staging / "cache"
            if svc.path.exists() and (old_cache / "conf.xml").is_file():
                if keep:
                    if sd_cache.exists():
                        shutil.rmtree(sd_cache)
                        job.message("Ignored the cache inside the .sd: keeping the existing cache.")
                    old_cache.rename(sd_cache)
                    moved = True
                    job.message("Keeping the existing map cache (keepExistingMapCache).")
                else:
                    job.message("The existing map cache is deleted (keepExistingMapCache false).")
            elif (sd_cache / "conf.xml").is_file():
                job.message("Using the map cache packaged in the .sd.")
            try:
                open_project_store(project, create=True).close()
            except TileDeltaError as exc:
                raise JobFailed(f"the map cache does not fit the new service: {exc}") from None
            extent = data_extent(read_layers(project)) or project.extent or project.scheme.extent
            doc = {
                **{k: v for k, v in info.items() if k != "extent"},
                "folder": svc.folder,
                "name": svc.name,
                "extent": list(extent) if extent else None,
                "published": int(time.time() * 1000),
            }
            (staging / "serviceinfo.json").write_text(json.dumps(doc, indent=1), "utf-8")
            self._checkpoint(job)
            retired = None
            if svc.path.exists():
                retired = svc.path.with_name(f".{svc.name}.old-{secrets.token_hex(4)}")
                svc.path.rename(retired)
            staging.rename(svc.path)
            moved = False
            if retired is not None:
                shutil.rmtree(retired, ignore_errors=True)
            with self._lock:
                self._readers.pop(svc.key, None)
            job.message(f"Published {svc.key}.MapServer.")
        finally:
            if moved and (staging / "cache").exists():
                (staging / "cache").rename(old_cache)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    # -- caching ----------------------------------------------------------------------------
    def _levels(self, scheme: TilingScheme, text: str) -> tuple[list[int], list[float]]:
        values = [v.strip() for v in (text or "").split(";") if v.strip()]
        if not values:
            raise JobFailed("levels: give one or more scales separated by semicolons")
        levels, scales = [], []
        for v in values:
            try:
                s = float(v)
            except ValueError:
                raise JobFailed(f"levels: {v!r} is not a scale") from None
            scales.append(s)
            match = [
                lod.level
                for lod in scheme.lods
                if abs(lod.scale - s) <= max(1e-6 * lod.scale, 0.01)
            ]
            if not match:
                raise JobFailed(
                    f"Scale {v} is not a level of the service's tiling scheme "
                    f"(its scales: {', '.join(f'{lod.scale:g}' for lod in scheme.lods)})"
                )
            if match[0] not in levels:
                levels.append(match[0])
        return levels, scales

    def _area(self, job: Job, svc_sr: dict, params: dict[str, str], default: Bounds | None):
        """The area to cache: area_of_interest, else constraining_extent, else the full extent."""
        aoi_text = (params.get("area_of_interest") or "").strip()
        ext_text = (params.get("constraining_extent") or "").strip()
        want = _wkid(svc_sr)

        def check_sr(sr: Any, what: str) -> None:
            if not sr:
                job.message(f"{what} has no spatialReference; assuming the service's.", WARNING)
            elif _wkid(sr) != want:
                raise JobFailed(
                    f"{what} is in {_sr_name(sr)} but the service's tiling scheme is in "
                    f"{_sr_name(svc_sr)}; send it in the service's spatial reference"
                )

        if aoi_text:
            try:
                fs = json.loads(aoi_text)
            except ValueError as exc:
                raise JobFailed(f"area_of_interest is not valid JSON ({exc})") from None
            if not isinstance(fs, dict):
                raise JobFailed("area_of_interest must be a FeatureSet JSON object")
            gtype = fs.get("geometryType", "esriGeometryPolygon")
            if gtype != "esriGeometryPolygon":
                raise JobFailed(f"area_of_interest must hold polygons, not {gtype}")
            features = fs.get("features") or []
            if not isinstance(features, list) or not features:
                raise JobFailed("area_of_interest has no features")
            parts = []
            for i, feat in enumerate(features):
                geom = (feat or {}).get("geometry") if isinstance(feat, dict) else None
                if not isinstance(geom, dict) or not isinstance(geom.get("rings"), list):
                    raise JobFailed(f"area_of_interest feature {i} has no polygon rings")
                check_sr(
                    geom.get("spatialReference") or fs.get("spatialReference"), "area_of_interest"
                )
                try:
                    parts.append(esri_polygon(geom["rings"]))
                except (TypeError, ValueError, IndexError) as exc:
                    raise JobFailed(f"area_of_interest feature {i}: bad rings ({exc})") from None
            job.record["aoi"] = aoi_text
            return shapely.union_all(parts), "area_of_interest"
        if ext_text and ext_text.upper() != "DEFAULT":
            try:
                env = json.loads(ext_text)
                sr = env.get("spatialReference")
                box = [float(env[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (ValueError, KeyError, TypeError, AttributeError):
                try:
                    box, sr = [float(v) for v in ext_text.replace(",", " ").split()], None
                except ValueError:
                    box = []
                if len(box) != 4:
                    raise JobFailed(
                        "constraining_extent must be a JSON extent "
                        '{"xmin","ymin","xmax","ymax","spatialReference"}'
                    ) from None
            check_sr(sr, "constraining_extent")
            if box[0] >= box[2] or box[1] >= box[3]:
                raise JobFailed("constraining_extent is empty (xmin >= xmax or ymin >= ymax)")
            job.record["constraining_extent"] = ext_text
            return shapely.box(*box), "constraining_extent"
        if default is None:
            raise JobFailed("the service has no full extent; give an area_of_interest")
        return shapely.box(*default), "full extent"

    def _cache_job(self, job: Job, params: dict[str, str]) -> None:
        svc = self._service_from_url(params.get("service_url", ""))
        with self._service_lock(svc.key):
            self._begin(job)
            self._cache_work(job, svc, params)

    def _cache_work(self, job: Job, svc: Service, params: dict[str, str]) -> None:
        from tiledelta.grid import scheme_to_tile_info
        from tiledelta.plan import full_plan
        from tiledelta.sources import read_layers

        project = self._project(svc)
        scheme = project.cache_scheme
        levels, scales = self._levels(scheme, params.get("levels", ""))
        mode = (params.get("update_mode") or "RECREATE_ALL_TILES").strip().upper()
        try:
            threads = int(params.get("thread_count") or -1)
        except ValueError:
            raise JobFailed(
                f"thread_count {params.get('thread_count')!r} is not an integer"
            ) from None
        rec = job.record
        rec.update(
            service=svc.key,
            levels=levels,
            scales=scales,
            update_mode=mode,
            thread_count=threads,
            aoi=None,
            constraining_extent=None,
            tiles=[],
            written=[],
            deleted=[],
            unchanged=[],
            blank=[],
        )
        if mode not in UPDATE_MODES:
            raise JobFailed(
                f"update_mode {mode} is not supported by the emulator "
                f"(use {', '.join(UPDATE_MODES)})"
            )
        ext = svc.info().get("extent")
        area, source = self._area(
            job,
            scheme_to_tile_info(scheme)["spatialReference"],
            params,
            Bounds(*ext) if ext else None,
        )
        job.message(
            f"{mode} at levels {', '.join(map(str, levels))} over the {source} "
            f"of {svc.key}.MapServer"
        )
        self._cache_jobs_run += 1
        meta = project.settings.metatile
        selected = {lv: tiles_in_area(scheme, lv, area) for lv in levels}
        total = sum(len(v) for v in selected.values())
        rec["tiles"] = sorted(
            (lv, int(r), int(c)) for lv, rc in selected.items() for r, c in rc.tolist()
        )
        written: list = rec["written"]
        deleted: list = rec["deleted"]
        unchanged: list = rec["unchanged"]
        blank: list = rec["blank"]
        renderer = None
        reached: dict[int, set] = {}
        if mode != "DELETE_TILES":
            layers = read_layers(project)
            plan = full_plan(project, layers, levels)
            reached = {lv: set(map(tuple, mt.tolist())) for lv, mt in plan.levels.items()}
        done = 0
        with open_project_store(project, create=True) as store:
            for lv in levels:
                groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
                for r, c in selected[lv].tolist():
                    groups.setdefault((r // meta, c // meta), []).append((r, c))
                order = sorted(
                    groups, key=lambda m: (m[0] * meta // BUNDLE, m[1] * meta // BUNDLE, m)
                )
                pending: list[tuple[int, int, int, bytes | None]] = []
                bundle_key = None
                for mrow, mcol in order:
                    key = (mrow * meta // BUNDLE, mcol * meta // BUNDLE)
                    if key != bundle_key and pending:
                        store.put_many(pending)
                        pending = []
                    bundle_key = key
                    if job.cancel_event.is_set():
                        if pending:
                            store.put_many(pending)
                        raise JobCancelled()
                    wanted = groups[(mrow, mcol)]
                    addrs = [(lv, r, c) for r, c in wanted]
                    stored = store.get_many(addrs)
                    if mode == "DELETE_TILES":
                        for a in addrs:
                            if a in stored:
                                pending.append((*a, None))
                                deleted.append(a)
                    else:
                        todo = (
                            wanted
                            if mode == "RECREATE_ALL_TILES"
                            else [(r, c) for r, c in wanted if (lv, r, c) not in stored]
                        )
                        if not todo:
                            results = []
                        elif (mrow, mcol) in reached.get(lv, ()):
                            if renderer is None:
                                from tiledelta.render.renderer import Renderer

                                renderer = Renderer(
                                    project.style, project.scheme, layers, project.settings
                                )
                            results = renderer.tiles(lv, mrow, mcol, wanted=set(todo))
                        else:  # no feature reaches this meta-tile: its tiles are blank
                            results = [(lv, r, c, None) for r, c in todo]
                        for _lv, r, c, data in results:
                            a = (lv, r, c)
                            prev = stored.get(a)
                            if data is None:
                                blank.append(a)
                                if prev is not None:
                                    pending.append((*a, None))
                                    deleted.append(a)
                            elif data == prev:
                                unchanged.append(a)
                            else:
                                pending.append((*a, data))
                                written.append(a)
                    done += len(wanted)
                    job.progress = f"level {lv}: {done:,} of {total:,} tiles"
                if pending:
                    store.put_many(pending)
        job.message(
            f"{total:,} tiles in the area: {len(written):,} written, {len(deleted):,} deleted, "
            f"{len(unchanged):,} unchanged, {len(blank):,} blank"
        )
        job.results["result"] = {
            "tiles": total,
            "written": len(written),
            "deleted": len(deleted),
            "unchanged": len(unchanged),
        }

    # -- reporting --------------------------------------------------------------------------
    def _report_cache_status(self, params: dict[str, str]) -> dict:
        mode = (params.get("report_mode") or "esriCacheStatus").strip()
        if mode != "esriCacheStatus":
            return rest_error(
                400,
                "Unable to complete operation.",
                [f"report_mode {mode} is not implemented by the emulator (use esriCacheStatus)"],
            )
        try:
            svc = self._service_from_url(params.get("service_url", ""))
        except JobFailed as exc:
            return rest_error(400, "Unable to complete operation.", [str(exc)])
        project = self._project(svc)
        scheme = project.cache_scheme
        reader = self._reader(svc)
        counts = reader.count() if reader is not None else {}
        ext = svc.info().get("extent")
        lod_infos = []
        for lv in project.levels:
            expected = covering_tiles(scheme, lv, Bounds(*ext)) if ext else 0
            n = counts.get(lv, 0)
            lod_infos.append(
                {
                    "levelID": lv,
                    "scale": scheme.lod(lv).scale,
                    "resolution": scheme.lod(lv).resolution,
                    "tileCount": n,
                    "expectedTileCount": expected,
                    "percent": min(100, math.floor(100 * n / expected)) if expected else 0,
                }
            )
        value = {
            "serviceName": f"{svc.key}.MapServer",
            "totalTileCount": sum(counts.get(lv, 0) for lv in project.levels),
            "lodInfos": lod_infos,
        }
        return {
            "results": [{"paramName": "result", "dataType": "GPString", "value": value}],
            "messages": [],
        }

    # -- /admin -----------------------------------------------------------------------------
    def _admin(self, req: _Request, seg: list[str]) -> _Response:
        p = req.pretty
        denied = self._check_token(req)
        if denied == 499:
            return _json(admin_error(499, ["Token Required."]), p)
        if denied == 498:
            return _json(admin_error(498, ["Invalid token."]), p)
        if seg == ["uploads", "upload"]:
            if req.method != "POST":
                return _json(admin_error(405, ["uploads/upload takes POST only."]), p)
            return _json(self._upload(req), p)
        if len(seg) >= 2 and seg[0] == "uploads":
            folder = self.root / "uploads" / seg[1]
            meta = folder / "item.json"
            if not re.fullmatch(r"i[0-9a-f]{32}", seg[1]) or not meta.is_file():
                return _json(admin_error(404, [f"Item {seg[1]} not found."]), p)
            if len(seg) == 2:
                return _json(json.loads(meta.read_text("utf-8")), p)
            if seg[2:] == ["delete"] and req.method == "POST":
                shutil.rmtree(folder, ignore_errors=True)
                return _json({"status": "success"}, p)
        if seg == ["services", "System", "CachingTools.GPServer", "statistics"]:
            return _json(self._statistics(), p)
        if seg == ["uploads"]:
            items = []
            for d in sorted((self.root / "uploads").iterdir()):
                if (d / "item.json").is_file():
                    items.append(json.loads((d / "item.json").read_text("utf-8")))
            return _json({"items": items}, p)
        return _json(admin_error(404, [f"{req.path} is not implemented by the emulator."]), p)

    def _upload(self, req: _Request) -> dict:
        if "itemFile" not in req.files:
            return admin_error(400, ["The multipart field itemFile (the file) is missing."])
        fname, data = req.files["itemFile"]
        item_id = "i" + uuid.uuid4().hex
        folder = self.root / "uploads" / item_id
        folder.mkdir(parents=True)
        name = _safe_filename(fname)
        (folder / name).write_bytes(data)
        item = {
            "itemID": item_id,
            "itemName": name,
            "description": req.params.get("description", ""),
            "pathOnServer": str(folder / name),
            "date": int(time.time() * 1000),
            "committed": True,
            "size": len(data),
        }
        (folder / "item.json").write_text(json.dumps(item), "utf-8")
        return {"status": "success", "item": item}

    def _statistics(self) -> dict:
        with self._lock:
            running = sum(
                1
                for j in self.jobs.values()
                if j.service in CACHE_SERVICES and j.status in (EXECUTING, CANCELLING)
            )
            f = self.faults
            extra = 0
            if f.busy != 0:
                extra = max(1, f.busy_instances)
                if f.busy > 0:
                    f.busy -= 1
        busy = running + extra
        most = max(4, busy)
        return {
            "summary": {
                "folderName": "System",
                "serviceName": "CachingTools",
                "type": "GPServer",
                "startTime": int(self._started * 1000),
                "endTime": int(time.time() * 1000),
                "max": most,
                "busy": busy,
                "free": most - busy,
                "initializing": 0,
                "notCreated": 0,
                "transactions": self._cache_jobs_run,
                "isStatisticsAvailable": True,
            },
            "perMachine": [
                {
                    "machineName": "EMULATOR",
                    "isStatisticsAvailable": True,
                    "busy": busy,
                    "free": most - busy,
                    "max": most,
                }
            ],
        }


# ------------------------------------------------------------------------------ HTTP plumbing


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            line = h.rfile.readline(65537)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline(65537)
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length > 0 else b""


def _write_response(h: BaseHTTPRequestHandler, resp: _Response, head_only: bool = False) -> None:
    h.send_response(resp.status)
    h.send_header("Content-Type", resp.content_type)
    h.send_header("Content-Length", str(len(resp.body)))
    for k, v in resp.headers.items():
        h.send_header(k, v)
    h.end_headers()
    if not head_only:
        h.wfile.write(resp.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tiledelta-arcgis-emulator/1"
    emulator: Emulator

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.emulator._handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.emulator._handle(self, "POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self.emulator._handle(self, "HEAD")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silenced: the default line holds the query string, which may hold a token."""


# ------------------------------------------------------------------------------ CLI


def make_service_definition(
    project: Path,
    out: Path,
    folder: str,
    name: str,
    *,
    keep_cache: bool = True,
    include_cache: bool = False,
) -> Path:
    """Package a tiledelta project as the emulator's service definition (a zip + serviceinfo).

    Emulator-only: real ArcGIS .sd files are 7-Zip archives staged by ArcGIS Pro.
    """
    project, out = Path(project), Path(out)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = {"folder": folder, "name": name, "keepExistingMapCache": keep_cache}
        zf.writestr("serviceinfo.json", json.dumps(info))
        for p in sorted(project.rglob("*")):
            rel = p.relative_to(project)
            if p.is_dir() or rel.parts[0] in (".tiledelta", ".env") or p.suffix == ".sd":
                continue
            if rel.parts[0] == "cache" and not include_cache:
                continue
            zf.write(p, rel.as_posix())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m support.emulator",
        description="Serve an ArcGIS Server emulator (tiledelta's stand-in for tests).",
    )
    ap.add_argument("--root", required=True, type=Path, help="folder holding the emulator state")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6080)
    ap.add_argument("--site", default="arcgis")
    ap.add_argument("--user", required=True, help="the one user that may sign in")
    ap.add_argument("--password", help="its password (default: $ARCGIS_PASSWORD)")
    ap.add_argument("--token-minutes", type=int, default=60)
    ap.add_argument(
        "--portal",
        action="store_true",
        help="also serve a minimal emulated Portal (federated tokens, items)",
    )
    ap.add_argument("--portal-site", default="portal")
    ap.add_argument(
        "--add-item",
        action="append",
        default=[],
        metavar="TYPE:TITLE",
        help="with --portal: create an item owned by --user and print its id (repeatable)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    password = args.password or os.environ.get("ARCGIS_PASSWORD")
    if not password:
        print("error: give --password or set ARCGIS_PASSWORD", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    emu = Emulator(
        args.root,
        username=args.user,
        password=password,
        host=args.host,
        port=args.port,
        site=args.site,
        token_minutes=args.token_minutes,
        portal=args.portal,
        portal_site=args.portal_site,
    )
    if args.add_item and not args.portal:
        print("error: --add-item needs --portal", file=sys.stderr)
        return 1
    try:
        emu.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(emu.url, flush=True)
    if args.portal:
        print(emu.portal_url, flush=True)
        for spec in args.add_item:
            kind, _, title = spec.partition(":")
            item_id = emu.portal_add_item(args.user, kind, title or kind)
            print(f"item {item_id} ({kind}: {title or kind})", flush=True)
    stop = threading.Event()
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Emulator",
    "Faults",
    "Job",
    "PortalItem",
    "RequestRecord",
    "Service",
    "esri_polygon",
    "main",
    "parse_multipart",
    "tiles_in_area",
]
