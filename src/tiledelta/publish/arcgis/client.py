"""A small ArcGIS Server / Portal REST client: tokens, service info, GP jobs, uploads.

Secrets never leave this module in readable form: the password is held in a
:class:`Secret`, tokens travel in the ``X-Esri-Authorization`` header (never in
URLs, so they cannot end up in logs), and every error message is scrubbed.

With a portal (a federated server) there are two tokens: the portal token, from the
portal's ``generateToken`` with the username and password, goes with portal requests
(items); it is exchanged at the same endpoint (``token`` + ``serverUrl``) for a server
token, which goes with server requests. Both are renewed before they expire, and
again when the server or portal refuses them (498/499).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from tiledelta.credentials import Secret, env_value
from tiledelta.errors import TileDeltaError

log = logging.getLogger(__name__)

JOB_DONE = {"esriJobSucceeded", "esriJobFailed", "esriJobTimedOut", "esriJobCancelled"}
PUBLISH_TASK = "System/PublishingTools/GPServer/Publish Service Definition"


class ArcGISError(TileDeltaError):
    """The server refused, failed, or could not be reached."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        #: The ArcGIS error code (e.g. 498 invalid token), when the server sent one.
        self.code = code


def load_credentials(project_root: Path) -> tuple[str, Secret]:
    """ARCGIS_USERNAME / ARCGIS_PASSWORD from the environment or ``project_root/.env``."""
    user = env_value(project_root, "ARCGIS_USERNAME")
    password = env_value(project_root, "ARCGIS_PASSWORD")
    if not user or not password:
        raise ArcGISError(
            "ArcGIS credentials missing: set ARCGIS_USERNAME and ARCGIS_PASSWORD in the "
            f"environment or in {project_root / '.env'} (see sample.env)"
        )
    return user, Secret(password)


@dataclass
class Token:
    value: Secret
    expires: float  # epoch seconds

    def fresh(self, margin: float = 120.0) -> bool:
        return time.time() + margin < self.expires


def is_local(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


class ArcGISClient:
    """Talks to one ArcGIS Server site (optionally federated with a Portal)."""

    def __init__(
        self,
        server: str,
        username: str,
        password: Secret,
        *,
        portal: str | None = None,
        verify: bool | str = True,
        token_minutes: int = 60,
        timeout: float = 60.0,
        retries: int = 3,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.portal = portal.rstrip("/") if portal else None
        for url in filter(None, (self.server, self.portal)):
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https"):
                raise ArcGISError(f"{url}: not an http(s) URL")
            if scheme == "http":
                if not is_local(url):
                    raise ArcGISError(
                        f"{url}: plain http is only allowed for a server on localhost; use https"
                    )
                (warn or log.warning)(
                    f"{url}: plain http (no TLS) - fine for a local emulator only"
                )
        self.username = username
        self._password = password
        self.token_minutes = token_minutes
        self.retries = retries
        self._token: Token | None = None  # the server's token
        self._portal_token: Token | None = None
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ArcGISClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level -------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        secrets = [self._password.get()]
        secrets += [t.value.get() for t in (self._token, self._portal_token) if t is not None]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text

    def _send(
        self, method: str, url: str, *, data=None, files=None, auth: str | None = "server"
    ) -> dict:
        """One JSON request with retries on 5xx / network errors; ArcGIS errors raised.

        ``auth`` says which token goes with it: ``"server"``, ``"portal"`` or None.
        """
        last: str = ""
        for attempt in range(self.retries + 1):
            # Tokens are issued for client=referer: every request names that referer.
            headers = {"Referer": self.server}
            if auth == "portal":
                headers["X-Esri-Authorization"] = f"Bearer {self.portal_token().get()}"
            elif auth:
                headers["X-Esri-Authorization"] = f"Bearer {self.token().get()}"
            for part in (files or {}).values():  # a retry sends open files from the start
                if isinstance(part, tuple) and hasattr(part[1], "seek"):
                    part[1].seek(0)
            try:
                resp = self._http.request(method, url, data=data, files=files, headers=headers)
            except httpx.HTTPError as exc:
                last = f"cannot reach {urlsplit(url).netloc}: {type(exc).__name__}"
                self._backoff(attempt)
                continue
            if resp.status_code >= 500:
                last = f"{urlsplit(url).path}: HTTP {resp.status_code}"
                self._backoff(attempt)
                continue
            if resp.status_code >= 400:
                raise ArcGISError(self._scrub(f"{urlsplit(url).path}: HTTP {resp.status_code}"))
            try:
                body = resp.json()
            except json.JSONDecodeError:
                raise ArcGISError(
                    f"{urlsplit(url).path}: the server did not answer JSON; is this an ArcGIS URL?"
                ) from None
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(body, dict) and body.get("status") == "error":  # Administrator API
                err = {
                    "code": body.get("code"),
                    "message": "; ".join(str(m) for m in body.get("messages") or []) or "error",
                }
            if err:
                code = err.get("code")
                if code in (498, 499) and auth and attempt < self.retries:
                    # expired or rejected: get a new one and retry
                    if auth == "portal":
                        self._portal_token = None
                    else:
                        self._token = None
                    continue
                msg = err.get("message", "error")
                details = "; ".join(str(d) for d in err.get("details") or [] if d)
                raise ArcGISError(
                    self._scrub(
                        f"{urlsplit(url).path}: {msg}"
                        + (f" ({details})" if details else "")
                        + (f" [code {code}]" if code else "")
                    ),
                    code=code if isinstance(code, int) else None,
                )
            return body
        raise ArcGISError(self._scrub(f"{last} (after {self.retries + 1} tries)"))

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(min(0.2 * 2**attempt, 5.0))

    def get(self, path: str, **params) -> dict:
        params.setdefault("f", "json")
        url = f"{self.server}/{path.lstrip('/')}"
        q = "&".join(f"{quote(str(k))}={quote(str(v), safe='')}" for k, v in params.items())
        return self._send("GET", f"{url}?{q}")

    def post(self, path: str, files=None, **data) -> dict:
        data.setdefault("f", "json")
        return self._send("POST", f"{self.server}/{path.lstrip('/')}", data=data, files=files)

    # -- tokens ----------------------------------------------------------------------------
    def token(self) -> Secret:
        """A valid server token, fetched or refreshed before it expires.

        With a portal it is the federated token the portal exchanges its own for.
        """
        if self._token is None or not self._token.fresh():
            self._token = self._federated_token() if self.portal else self._server_token()
        return self._token.value

    def portal_token(self) -> Secret:
        """A valid portal token (for item requests), fetched or refreshed before it expires."""
        if not self.portal:
            raise ArcGISError("[arcgis] portal is not set: no portal to sign in to")
        if self._portal_token is None or not self._portal_token.fresh():
            self._portal_token = self._sign_in(f"{self.portal}/sharing/rest/generateToken")
        return self._portal_token.value

    def _form(self) -> dict[str, str]:
        return {
            "client": "referer",
            "referer": self.server,
            "expiration": str(self.token_minutes),
            "f": "json",
        }

    def _sign_in(self, url: str) -> Token:
        form = {"username": self.username, "password": self._password.get(), **self._form()}
        return self._token_from(self._send("POST", url, data=form, auth=None))

    def _server_token(self) -> Token:
        return self._sign_in(f"{self.server}/tokens/generateToken")

    def _federated_token(self) -> Token:
        """The portal token exchanged for a token of the federated server."""
        url = f"{self.portal}/sharing/rest/generateToken"
        for attempt in range(2):
            form = {"token": self.portal_token().get(), "serverUrl": self.server, **self._form()}
            try:
                return self._token_from(self._send("POST", url, data=form, auth=None))
            except ArcGISError as exc:
                if exc.code in (498, 499) and attempt == 0:
                    self._portal_token = None  # the portal refused its own token: sign in again
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_from(self, body: dict) -> Token:
        value = body.get("token")
        if not value:
            raise ArcGISError("no token was returned; check the username and password")
        expires = float(body.get("expires", 0)) / 1000 or time.time() + 60 * self.token_minutes
        return Token(Secret(value), expires)

    # -- services and jobs -----------------------------------------------------------------
    def service_info(self, service: str) -> dict:
        """MapServer JSON of ``Folder/Name``."""
        return self.get(f"rest/services/{service.strip('/')}/MapServer")

    def caching_busy(self) -> int:
        """How many caching jobs the site is running (0 when it cannot tell)."""
        try:
            body = self.get("admin/services/System/CachingTools.GPServer/statistics")
        except ArcGISError as exc:
            log.info("busy check unavailable: %s", exc)
            return 0
        return int((body.get("summary") or {}).get("busy", 0) or 0)

    def submit(self, task: str, **params) -> str:
        body = self.post(f"rest/services/{task}/submitJob", **params)
        job = body.get("jobId")
        if not job:
            raise ArcGISError(f"{task}: the server returned no job id")
        return job

    def job(self, task: str, job_id: str) -> dict:
        return self.get(f"rest/services/{task}/jobs/{job_id}")

    def cancel(self, task: str, job_id: str) -> None:
        try:
            self.post(f"rest/services/{task}/jobs/{job_id}/cancel")
        except ArcGISError as exc:
            log.warning("could not cancel job %s: %s", job_id, exc)

    def wait_job(
        self,
        task: str,
        job_id: str,
        *,
        poll: float = 2.0,
        timeout: float = 3600.0,
        on_message: Callable[[str], None] | None = None,
    ) -> dict:
        """Poll a job until it ends; Ctrl-C cancels it on the server. Returns the last status."""
        seen = 0
        deadline = time.monotonic() + timeout
        try:
            while True:
                status = self.job(task, job_id)
                messages = status.get("messages") or []
                for m in messages[seen:]:
                    if on_message:
                        on_message(str(m.get("description", "")))
                seen = len(messages)
                if status.get("jobStatus") in JOB_DONE:
                    return status
                if time.monotonic() > deadline:
                    self.cancel(task, job_id)
                    status["jobStatus"] = "esriJobTimedOut"
                    return status
                time.sleep(poll)
        except KeyboardInterrupt:
            self.cancel(task, job_id)
            raise

    def upload(self, path: Path) -> str:
        """Upload a file (e.g. a staged .sd) to the server; return its item id."""
        with open(path, "rb") as fh:
            body = self.post("admin/uploads/upload", files={"itemFile": (path.name, fh)})
        item = (body.get("item") or {}).get("itemID")
        if not item:
            raise ArcGISError(f"upload of {path.name} returned no item id")
        return item

    def _item_url(self, item_id: str) -> str:
        if not self.portal:
            raise ArcGISError("[arcgis] portal is not set: cannot reach the portal item")
        return (
            f"{self.portal}/sharing/rest/content/users/{quote(self.username, safe='')}/items/"
            f"{quote(item_id, safe='')}"
        )

    def get_item(self, item_id: str) -> dict:
        """The portal item's JSON (title, description, thumbnail, size ...)."""
        body = self._send("GET", f"{self._item_url(item_id)}?f=json", auth="portal")
        return body.get("item", body)

    def update_item(
        self, item_id: str, *, thumbnail: bytes | None = None, files=None, **fields
    ) -> dict:
        """Update a portal item (thumbnail and/or fields such as description).

        The request carries the portal token. ``files`` adds multipart parts
        (``{"file": (name, fileobj, type)}``).
        """
        url = f"{self._item_url(item_id)}/update"
        parts = dict(files or {})
        if thumbnail:
            parts["thumbnail"] = ("thumbnail.png", thumbnail, "image/png")
        fields.setdefault("f", "json")
        body = self._send("POST", url, data=fields, files=parts or None, auth="portal")
        if body.get("success") is False:
            raise ArcGISError(f"the portal did not update item {item_id}")
        return body

    def upload_item_file(self, item_id: str, path: Path) -> dict:
        """Replace the portal item's data with ``path`` (e.g. a .tpkx tile package)."""
        path = Path(path)
        with open(path, "rb") as fh:
            return self.update_item(
                item_id, files={"file": (path.name, fh, "application/octet-stream")}
            )
