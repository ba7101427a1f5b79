"""The emulator's vocabulary: names and codes, its state types, and its request/response
types with the two error shapes (REST and Administrator API)."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CURRENT_VERSION = 11.1
REDACTED = "***"
#: Request parameters whose values never reach the request log.
SECRET_PARAMS = frozenset({"token", "password", "client_secret", "access_token"})
ROOT_FOLDER_DIR = "@root"  # services without a folder (not a valid ArcGIS folder name)
RESERVED_FOLDERS = frozenset({"System", "Utilities"})
#: A service's compact cache, inside its project folder (publishing sets the project so).
CACHE_DIR = "cache"
#: A service's own metadata (folder, name, extent ...), beside its project.
SERVICE_INFO = "serviceinfo.json"
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
UPLOAD_ID_RE = re.compile(r"i[0-9a-f]{32}")  # use with fullmatch

SUBMITTED = "esriJobSubmitted"
EXECUTING = "esriJobExecuting"
SUCCEEDED = "esriJobSucceeded"
FAILED = "esriJobFailed"
CANCELLING = "esriJobCancelling"
CANCELLED = "esriJobCancelled"
TIMED_OUT = "esriJobTimedOut"
DELETING = "esriJobDeleting"
DELETED = "esriJobDeleted"
EXPECTED_FAILURE = "expectedFailure"
JOB_DONE = frozenset({SUCCEEDED, FAILED, CANCELLED, TIMED_OUT, DELETED, EXPECTED_FAILURE})
#: States a job can be made to end in (``Faults.end_next_jobs``), each with the messages a
#: server gives with it; any other string is reported as it is, forever (an unknown state).
INJECTABLE_ENDS = {
    SUCCEEDED: [],
    FAILED: ["ERROR 999999: Injected failure (emulator fault end_next_jobs)."],
    TIMED_OUT: ["The job exceeded the service's maximum time a client can use (injected)."],
    CANCELLED: ["Cancelled (injected)."],
    CANCELLING: ["Cancelling (injected)."],
    DELETING: ["The job is being deleted (injected)."],
    DELETED: ["The job was deleted (injected)."],
    EXPECTED_FAILURE: ["ERROR 000000: Expected failure (injected)."],
}
ADMINISTRATOR = "administrator"
PUBLISHER = "publisher"
ROLES = (ADMINISTRATOR, PUBLISHER)
#: Single-request limits: a portal takes about 25 MB in one request (bigger files go in
#: parts); the server's own upload limit is the emulator's choice (see docs/emulator.md).
PORTAL_MAX_REQUEST_BYTES = 25 * 1024 * 1024
ADMIN_MAX_REQUEST_BYTES = 25 * 1024 * 1024
#: A portal's addPart takes parts of at least 5 MB, except the last.
MIN_PART_BYTES = 5 * 1024 * 1024
INFO = "esriJobMessageTypeInformative"
WARNING = "esriJobMessageTypeWarning"
ERROR = "esriJobMessageTypeError"


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
    #: The next submitted jobs end in these states, one per job, in order (see
    #: ``INJECTABLE_ENDS``); ``esriJobCancelling`` stays so for ``cancelling_seconds``
    #: (-1: for ever) and then becomes ``esriJobCancelled``; an unknown string stays.
    end_next_jobs: list[str] = field(default_factory=list)
    cancelling_seconds: float = 0.5
    #: The site has no ``System/CachingControllers`` (older sites: CachingTools only).
    no_caching_controllers: bool = False
    #: The next N admin POSTs whose token is in a header are refused with 498 (the
    #: Administrator API wants POST tokens in the form body).
    admin_header_token_498: int = 0
    #: The next N multipart parts (uploadPart / addPart) fail with an error JSON.
    fail_next_parts: int = 0


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
class Token:
    """An issued token (server or portal) and what it is bound to."""

    expires_ms: int
    client: str
    referer: str
    ip: str


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
    inject_end: str | None = None  # the state Faults.end_next_jobs gave this job
    #: whether the last status request asked for messages (returnMessages=true)
    messages_asked: bool = False
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
        return self.path / CACHE_DIR

    def info(self) -> dict[str, Any]:
        f = self.path / SERVICE_INFO
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


# ------------------------------------------------------------------------ requests, answers


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
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


def json_response(obj: Any, pretty: bool = False, status: int = 200) -> Response:
    text = json.dumps(obj, indent=2 if pretty else None, allow_nan=False, default=str)
    return Response(status, text.encode("utf-8"))


def rest_error(code: int, message: str, details: list[str] | None = None) -> dict:
    """The REST API's error object (sent with HTTP 200, as ArcGIS Server does)."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def admin_error(code: int, messages: list[str]) -> dict:
    """The Administrator API's error object."""
    return {"status": "error", "messages": messages, "code": code}


def redact(params: dict[str, str]) -> dict[str, str]:
    """``params`` with the values of secret parameters replaced by ``***``."""
    return {k: (REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in params.items()}


def safe_filename(name: str) -> str:
    """An uploaded file's name reduced to a plain, safe file name."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    return base or "upload.bin"


def content_type(data: bytes) -> str:
    """The media type of a tile or thumbnail, read from its magic bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return "application/octet-stream"
