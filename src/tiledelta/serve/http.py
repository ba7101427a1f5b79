"""HTTP helpers shared by the tile server's faces and the viewer: tile responses with
ETag / Last-Modified / 304, JSON and OWS errors, strict integer parsing."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.requests import Request
from starlette.responses import Response

from tiledelta.stores.base import JPEG_MAGIC, PNG_MAGIC, TileHit, confined

log = logging.getLogger(__name__)
#: Largest file the server reads whole (run files, Leaflet's files).
MAX_FILE_BYTES = 256 * 1024 * 1024

NO_CACHE = {"Cache-Control": "no-cache"}
INT = re.compile(r"[0-9]{1,10}", re.ASCII)
TILE_NAME = re.compile(r"([0-9]{1,10})\.(png|jpg|jpeg)", re.ASCII)


def json_response(obj: Any, status: int = 200, pretty: bool = False) -> Response:
    text = json.dumps(obj, indent=2 if pretty else None, allow_nan=False)
    return Response(
        text,
        status_code=status,
        media_type="application/json",
        headers=NO_CACHE,
    )


def error_response(status: int, message: str) -> Response:
    return json_response({"error": {"code": status, "message": message, "details": []}}, status)


def ows_error(status: int, code: str, text: str, locator: str | None = None) -> Response:
    loc = f" locator={quoteattr(locator)}" if locator else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/1.1" version="1.1.0">'
        f'<ows:Exception exceptionCode="{code}"{loc}>'
        f"<ows:ExceptionText>{escape(text)}</ows:ExceptionText></ows:Exception>"
        "</ows:ExceptionReport>\n"
    )
    return Response(body, status_code=status, media_type="application/xml")


def media_type(data: bytes) -> str:
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    return "application/octet-stream"


def etag_matches(header: str, etag: str) -> bool:
    for part in header.split(","):
        tag = part.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def not_modified_since(header: str, mtime: float) -> bool:
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if when is None:
        return False
    with contextlib.suppress(OverflowError, OSError, ValueError):
        return int(mtime) <= when.timestamp()
    return False


def tile_response(request: Request, hit: TileHit, max_age: int) -> Response:
    etag = '"' + hashlib.blake2b(hit.data, digest_size=16).hexdigest() + '"'
    headers = {
        "ETag": etag,
        "Last-Modified": email.utils.formatdate(hit.mtime, usegmt=True),
        "Cache-Control": f"public, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
    }
    inm = request.headers.get("if-none-match")
    if inm is not None:
        if etag_matches(inm, etag):
            return Response(status_code=304, headers=headers)
    else:
        ims = request.headers.get("if-modified-since")
        if ims is not None and not_modified_since(ims, hit.mtime):
            return Response(status_code=304, headers=headers)
    return Response(hit.data, media_type=media_type(hit.data), headers=headers)


def parse_int(text: str | None) -> int | None:
    """A non-negative decimal integer of at most 10 ASCII digits, else None."""
    if text is None or not INT.fullmatch(text):
        return None
    return int(text)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def confined_path(root: Path, path: Path) -> str | None:
    """The real path of ``path`` when it resolves (symlinks followed) inside the folder
    ``root`` (itself resolved), else None with a warning: the cache's rule, for every
    other file the server reads (run files, ``before.sqlite``, Leaflet)."""
    return confined(os.path.realpath(root), path)


def read_confined(root: Path, path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file inside ``root`` (see
    :func:`confined_path`), read without following a symlink swapped in meanwhile; None
    when absent, outside, not a regular file, unreadable or over :data:`MAX_FILE_BYTES`."""
    real = confined_path(root, path)
    if real is None:
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            log.warning("cannot read %s: %s", real, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        return fh.read(MAX_FILE_BYTES + 1)
