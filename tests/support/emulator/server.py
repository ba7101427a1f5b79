"""The emulator itself: :class:`Emulator` (state, lifecycle, services, request routing) and
the HTTP plumbing under it (a threading ``http.server``, bodies, multipart forms).

Each area of the REST contract is a mixin in its own module: tokens, the portal, map
services, GP jobs, publishing and caching.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tiledelta.project import PROJECT_FILE, Project
from tiledelta.stores import CompactCache, read_compact_cache

from .caching import CachingMixin
from .hosted import HostedMixin
from .jobs import JobsMixin
from .mapserver import MapServerMixin
from .model import (
    ADMIN_MAX_REQUEST_BYTES,
    ADMINISTRATOR,
    CURRENT_VERSION,
    JOB_DONE,
    MIN_PART_BYTES,
    NAME_RE,
    PORTAL_MAX_REQUEST_BYTES,
    ROLES,
    ROOT_FOLDER_DIR,
    UPLOAD_ID_RE,
    Faults,
    Job,
    JobFailed,
    Request,
    RequestRecord,
    Response,
    Service,
    Token,
    admin_error,
    json_response,
    redact,
    rest_error,
)
from .multipart import MultipartMixin
from .portal import PortalItem, PortalMixin, load_portal_items
from .publishing import PublishingMixin
from .tokens import TokensMixin

log = logging.getLogger(__name__)


class Emulator(
    TokensMixin,
    PortalMixin,
    MapServerMixin,
    JobsMixin,
    PublishingMixin,
    CachingMixin,
    MultipartMixin,
    HostedMixin,
):
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
        role: str = ADMINISTRATOR,
        portal_max_request_bytes: int = PORTAL_MAX_REQUEST_BYTES,
        admin_max_request_bytes: int = ADMIN_MAX_REQUEST_BYTES,
        min_part_bytes: int = MIN_PART_BYTES,
    ) -> None:
        if not username or not password:
            raise ValueError("the emulator needs a username and a password")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        #: The user's role: an administrator may do everything; a publisher may upload
        #: and publish but not read the admin statistics or list every upload.
        self.role = role
        #: Requests with a bigger body are refused with HTTP 413, as a web adaptor does.
        self.portal_max_request_bytes = portal_max_request_bytes
        self.admin_max_request_bytes = admin_max_request_bytes
        #: Parts (all but the last) of a portal multipart upload must be this big.
        self.min_part_bytes = min_part_bytes
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
        self._tokens: dict[str, Token] = {}
        #: Emulated Portal: on or off, its path segment, its tokens and items.
        self.portal = portal
        self.portal_site = portal_site.strip("/")
        self._portal_tokens: dict[str, Token] = {}
        self.portal_items: dict[str, PortalItem] = {}
        self._lock = threading.RLock()
        self._service_locks: dict[str, threading.Lock] = {}
        self._readers: dict[str, tuple[tuple, CompactCache]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._cache_jobs_run = 0
        for sub in ("services", "uploads", "jobs", "hosted"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if portal:
            self.portal_items.update(load_portal_items(self.root))

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
        handler = type("Handler", (Handler,), {"emulator": self})
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
                if (sdir / PROJECT_FILE).is_file() and NAME_RE.match(sdir.name):
                    folder = "" if fdir.name == ROOT_FOLDER_DIR else fdir.name
                    out.append(Service(folder, sdir.name, sdir))
        return out

    def _find_service(self, folder: str, name: str) -> Service | None:
        svc = self.service(folder, name)
        if not (NAME_RE.match(name) and (not folder or NAME_RE.match(folder))):
            return None
        return svc if (svc.path / PROJECT_FILE).is_file() else None

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

    def _project(self, svc: Service) -> Project:
        return Project.load(svc.path)

    def _reader(self, svc: Service) -> CompactCache | None:
        """A read-only view of the service's compact cache (reopened when conf.xml changes)."""
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

    def _request_limit(self, path: str) -> int | None:
        """The single-request limit for ``path`` (portal or admin uploads), or None."""
        seg = [s for s in unquote(path).split("/") if s]
        if self.portal and seg[:1] == [self.portal_site]:
            return self.portal_max_request_bytes
        if seg[:3] == [self.site, "admin", "uploads"] or "uploads" in seg[3:]:
            return self.admin_max_request_bytes  # the server's and its GP services' uploads
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(h.path)
        body = read_body(h)
        limit = self._request_limit(split.path)
        if limit is not None and len(body) > limit:
            rec = RequestRecord(method, unquote(split.path), {}, None, 413, time.time())
            with self._lock:
                self.requests.append(rec)
            text = f"<html><body><h1>413 Request Entity Too Large</h1>limit {limit} bytes"
            write_response(h, Response(413, text.encode(), "text/html; charset=utf-8"))
            return
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
        logged = redact(params)
        for name, (fname, data) in files.items():
            logged[name] = f"<file {fname}, {len(data)} bytes>"
        rec = RequestRecord(method, path, logged, via, time=time.time())
        with self._lock:
            self.requests.append(rec)
        req = Request(
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
            resp = Response(
                500,
                b"<html><body><h1>500 Internal Server Error</h1>(injected fault)</body></html>",
                "text/html; charset=utf-8",
            )
        elif bad_body:
            resp = json_response(rest_error(400, "Unable to complete operation.", [bad_body]))
        else:
            try:
                resp = self._route(req)
            except Exception:
                log.exception("emulator: %s %s failed", method, path)
                resp = json_response(
                    rest_error(500, "Unable to complete operation.", ["Internal error."])
                )
        rec.status = resp.status
        log.debug("%s %s -> %s", method, path, resp.status)
        write_response(h, resp, head_only=method == "HEAD")

    def _route(self, req: Request) -> Response:
        seg = req.segments
        if self.portal and seg and seg[0] == self.portal_site:
            return self._portal(req, seg[1:])
        if not seg or seg[0] != self.site:
            detail = [f"the site is /{self.site}"]
            return json_response(rest_error(404, "Not found", detail), status=404)
        seg = seg[1:]
        if seg == ["tokens", "generateToken"]:
            return json_response(self._generate_token(req, admin=False), req.pretty)
        if seg == ["admin", "generateToken"]:
            return json_response(self._generate_token(req, admin=True), req.pretty)
        if seg == ["rest", "info"]:
            return json_response(self._rest_info(), req.pretty)
        if seg[:1] == ["admin"]:
            return self._admin(req, seg[1:])
        if seg[:3] == ["rest", "admin", "services"]:
            return self._hosted_admin(req, seg[3:])
        if seg[:2] == ["rest", "services"]:
            return self._rest(req, seg[2:])
        return json_response(rest_error(404, "Not found", [req.path]), status=404)

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

    def _rest(self, req: Request, seg: list[str]) -> Response:
        """``/rest/services/...``: the catalog, map services and GP services."""
        denied = self._check_token(req)
        if denied == 499:
            return json_response(rest_error(499, "Token Required"), req.pretty)
        if denied == 498:
            return json_response(rest_error(498, "Invalid Token"), req.pretty)
        if "MapServer" in seg:
            i = seg.index("MapServer")
            if seg[:1] == ["Hosted"] and i == 2 and self._hosted_layer(seg[1]) is not None:
                return self._hosted_mapserver(req, seg[1], seg[i + 1 :])
            return self._mapserver(req, seg[:i], seg[i + 1 :])
        if "GPServer" in seg:
            i = seg.index("GPServer")
            return self._gpserver(req, seg[:i], seg[i + 1 :])
        if not seg:
            return json_response(self._catalog(""), req.pretty)
        if len(seg) == 1:
            cat = self._catalog(seg[0])
            if cat is None:
                return json_response(rest_error(404, "Folder not found", [seg[0]]), req.pretty)
            return json_response(cat, req.pretty)
        return json_response(rest_error(400, "Invalid URL", [req.path]), req.pretty)

    def _admin(self, req: Request, seg: list[str]) -> Response:
        """``/admin/...``: uploads and the caching tools' statistics (Administrator API)."""
        p = req.pretty
        denied = self._check_token(req)
        if denied == 499:
            return json_response(admin_error(499, ["Token Required."]), p)
        if denied == 498:
            return json_response(admin_error(498, ["Invalid token."]), p)
        if req.method == "POST" and req.token_via == "header":
            with self._lock:
                refuse = self.faults.admin_header_token_498 > 0
                if refuse:
                    self.faults.admin_header_token_498 -= 1
            if refuse:
                return json_response(admin_error(498, ["Invalid token."]), p)
        admin_only = seg == ["uploads"] or seg[:2] == ["services", "System"]
        if admin_only and self.role != ADMINISTRATOR:
            msg = f"User '{self.username}' ({self.role}) is not authorized to access {req.path}."
            return json_response(admin_error(403, [msg]), p)
        if seg == ["uploads", "register"]:
            if req.method != "POST":
                return json_response(admin_error(405, ["register takes POST only."]), p)
            return json_response(self._register_upload(req), p)
        if seg == ["uploads", "upload"]:
            if req.method != "POST":
                return json_response(admin_error(405, ["uploads/upload takes POST only."]), p)
            return json_response(self._upload(req), p)
        if len(seg) >= 2 and seg[0] == "uploads":
            folder = self.root / "uploads" / seg[1]
            meta = folder / "item.json"
            if not UPLOAD_ID_RE.fullmatch(seg[1]) or not meta.is_file():
                return json_response(admin_error(404, [f"Item {seg[1]} not found."]), p)
            if len(seg) == 2:
                return json_response(json.loads(meta.read_text("utf-8")), p)
            if seg[2:] == ["parts"]:
                return json_response(self._upload_parts(folder), p)
            if seg[2:] == ["uploadPart"] and req.method == "POST":
                return json_response(self._upload_part(req, folder), p)
            if seg[2:] == ["commit"] and req.method == "POST":
                return json_response(self._commit_upload(req, folder), p)
            if seg[2:] == ["delete"] and req.method == "POST":
                shutil.rmtree(folder, ignore_errors=True)
                return json_response({"status": "success"}, p)
        if seg == ["services", "System", "CachingTools.GPServer", "statistics"]:
            return json_response(self._statistics(), p)
        if seg == ["uploads"]:
            items = []
            for d in sorted((self.root / "uploads").iterdir()):
                if (d / "item.json").is_file():
                    items.append(json.loads((d / "item.json").read_text("utf-8")))
            return json_response({"items": items}, p)
        message = [f"{req.path} is not implemented by the emulator."]
        return json_response(admin_error(404, message), p)


# ------------------------------------------------------------------------------ HTTP plumbing


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


def read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, by Content-Length or chunked transfer encoding."""
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


def write_response(h: BaseHTTPRequestHandler, resp: Response, head_only: bool = False) -> None:
    h.send_response(resp.status)
    h.send_header("Content-Type", resp.content_type)
    h.send_header("Content-Length", str(len(resp.body)))
    for k, v in resp.headers.items():
        h.send_header(k, v)
    h.end_headers()
    if not head_only:
        h.wfile.write(resp.body)


class Handler(BaseHTTPRequestHandler):
    """Hands every request to its emulator (set per server by :meth:`Emulator.start`)."""

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
