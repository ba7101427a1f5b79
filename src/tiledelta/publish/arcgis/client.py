"""A small ArcGIS Server / Portal REST client: tokens, service info, GP jobs, uploads.

Secrets never leave this module in readable form: the password is held in a
:class:`Secret`, tokens travel in the ``X-Esri-Authorization`` header (never in
URLs, so they cannot end up in logs), and every error message is scrubbed.

With a portal (a federated server) there are two tokens: the portal token, from the
portal's ``generateToken`` with the username and password, goes with portal requests
(items); it is exchanged at the same endpoint (``token`` + ``serverUrl``) for a server
token, which goes with server requests. Both are renewed before they expire, and
again when the server or portal refuses them (498/499).

The portal token comes from one of three sign-in ways (:class:`~tiledelta.credentials.SignIn`):
a built-in account (``generateToken``), ArcGIS Pro's active sign-in (its token, sent with
its referer), or OAuth app credentials (``oauth2/token``, ``client_credentials``; an app
token reaches portal items only). A portal that answers 401 with ``WWW-Authenticate:
Negotiate``/``NTLM`` uses Windows logins (IWA): the error points to Pro's sign-in.
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

from tiledelta.credentials import (
    CredentialsError,
    Secret,
    SignIn,
    env_value,
    pro_sign_in,
    sign_in_for,
)
from tiledelta.errors import TileDeltaError
from tiledelta.publish.arcgis.uploads import (
    DEFAULT_PART_BYTES,
    ResumeStore,
    UploadRecord,
    part_count,
    read_part,
)

log = logging.getLogger(__name__)

#: Job states that end a poll, and what each means (one line for the operator).
JOB_END = {
    "esriJobSucceeded": "succeeded",
    "esriJobFailed": "failed on the server",
    "esriJobTimedOut": "timed out on the server (the service's maximum execution time)",
    "esriJobCancelled": "was cancelled",
    "esriJobDeleting": "is being deleted on the server",
    "esriJobDeleted": "was deleted on the server",
    "expectedFailure": "failed on the server (expectedFailure)",
}
JOB_DONE = frozenset(JOB_END)
#: States of a job that is still on its way.
JOB_RUNNING = frozenset({"esriJobNew", "esriJobSubmitted", "esriJobWaiting", "esriJobExecuting"})
CANCELLING = "esriJobCancelling"
PUBLISH_TASK = "System/PublishingTools/GPServer/Publish Service Definition"
CACHE_TASKS = (
    "System/CachingControllers/GPServer/Manage Map Cache Tiles",
    "System/CachingTools/GPServer/Manage Map Cache Tiles",
)
#: How long a poll follows a job that is cancelling, or in a state it does not know,
#: before it gives up (seconds).
SETTLE_SECONDS = 120.0


def job_summary(status: dict, what: str = "job") -> str:
    """One line: how the job ended, with the server's last error messages."""
    state = str(status.get("jobStatus") or "")
    job_id = status.get("jobId", "")
    if status.get("timedOutLocally"):
        how = "did not finish within [arcgis] job_timeout_minutes; tiledelta cancelled it"
    elif state in JOB_END:
        how = f"ended {state} ({JOB_END[state]})"
    elif state == CANCELLING:
        how = (
            f"was still {CANCELLING} when tiledelta stopped following it ([arcgis] settle_seconds)"
        )
    else:
        how = (
            f"reported the unknown state {state or '(none)'!r}; tiledelta stopped following "
            "it ([arcgis] settle_seconds)"
        )
    msgs = status.get("messages") or []
    errors = [m for m in msgs if "Error" in str(m.get("type", ""))] or msgs
    said = "; ".join(str(m.get("description", "")) for m in errors[-3:] if m.get("description"))
    return f"{what} {job_id} {how}" + (f": {said}" if said else "")


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


def load_sign_in(project_root: Path, portal: str | None = None) -> SignIn:
    """How to sign in: ArcGIS Pro's sign-in to ``portal``, a built-in account, or app
    credentials (:func:`tiledelta.credentials.sign_in_for`)."""
    try:
        return sign_in_for(project_root, portal)
    except CredentialsError as exc:
        raise ArcGISError(str(exc)) from None


@dataclass
class Token:
    value: Secret
    expires: float  # epoch seconds

    def fresh(self, margin: float = 120.0) -> bool:
        return time.time() + margin < self.expires


def windows_login(headers: httpx.Headers) -> bool:
    """A 401's ``WWW-Authenticate`` asks for Windows logins (Negotiate/NTLM: IWA)."""
    value = ",".join(headers.get_list("www-authenticate")).lower()
    return "negotiate" in value or "ntlm" in value


def iwa_message(url: str) -> str:
    """The one line for a portal or server that signs in with Windows (IWA) or SAML."""
    where = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    return (
        f"{where} uses Windows (IWA) or SAML logins, which tiledelta cannot do with a "
        "username and password: run it inside ArcGIS Pro signed in to that portal (the "
        "toolbox, or Pro's Python), and it uses Pro's sign-in (arcpy.GetSigninToken)"
    )


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
        sign_in: SignIn | None = None,
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
                # Only localhost gets here: a log line (-v), not a warning before every error.
                (warn or log.info)(f"{url}: plain http (no TLS) - fine for a local emulator only")
        self.username = username
        self._password = password
        #: how the portal (or server) token is obtained; a built-in account by default
        self.sign_in = sign_in or SignIn("password", username=username, password=password)
        #: the Referer every request names (Pro's tokens are bound to Pro's referer)
        self.referer = self.sign_in.referer if self.sign_in.kind == "pro" else self.server
        self.token_minutes = token_minutes
        self.retries = retries
        self._token: Token | None = None  # the server's token
        self._portal_token: Token | None = None
        self._tasks: dict[str, str] = {}  # cache task asked for -> the one the site has
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ArcGISClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- low level -------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        secrets = [self._password.get(), *self.sign_in.secrets()]
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
        # An admin POST refused for its token (498/499) is sent once more with a fresh
        # token in the form body, where the Administrator API wants it; never in the URL.
        admin_post = method == "POST" and auth == "server" and "/admin/" in url
        body_token = False
        for attempt in range(self.retries + 1):
            # Tokens are issued for client=referer: every request names that referer.
            headers = {"Referer": self.referer}
            send_data = data
            if auth == "portal":
                headers["X-Esri-Authorization"] = f"Bearer {self.portal_token().get()}"
            elif auth and body_token:
                send_data = {**(data or {}), "token": self.token().get()}
            elif auth:
                headers["X-Esri-Authorization"] = f"Bearer {self.token().get()}"
            for part in (files or {}).values():  # a retry sends open files from the start
                if isinstance(part, tuple) and hasattr(part[1], "seek"):
                    part[1].seek(0)
            try:
                resp = self._http.request(method, url, data=send_data, files=files, headers=headers)
            except httpx.HTTPError as exc:
                last = f"cannot reach {urlsplit(url).netloc}: {type(exc).__name__}"
                self._backoff(attempt)
                continue
            if resp.status_code >= 500:
                last = f"{urlsplit(url).path}: HTTP {resp.status_code}"
                self._backoff(attempt)
                continue
            if resp.status_code == 401 and windows_login(resp.headers):
                raise ArcGISError(iwa_message(url), code=401)
            if resp.status_code == 413:
                raise ArcGISError(
                    f"{urlsplit(url).path}: the server refused the request as too large "
                    "(HTTP 413); lower [arcgis] part_mb so that files go in smaller parts",
                    code=413,
                )
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
                if code in (498, 499) and admin_post:
                    if body_token or attempt >= self.retries:
                        raise ArcGISError(
                            f"{urlsplit(url).path}: the server refused a fresh token "
                            f"[code {code}]; check the user's privileges",
                            code=code,
                        )
                    self._token = None
                    body_token = True
                    continue
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
            if self.sign_in.kind == "app":
                raise ArcGISError(
                    f"{self.sign_in.describe()} cannot reach {self.server}: an app token acts "
                    "for no user, so it cannot publish, upload or run cache jobs. Set "
                    "ARCGIS_USERNAME and ARCGIS_PASSWORD of a publisher, or run inside ArcGIS "
                    "Pro signed in to the portal"
                )
            self._token = self._federated_token() if self.portal else self._server_token()
        return self._token.value

    def portal_token(self) -> Secret:
        """A valid portal token (for item requests), fetched or refreshed before it expires."""
        if not self.portal:
            raise ArcGISError("[arcgis] portal is not set: no portal to sign in to")
        if self._portal_token is None or not self._portal_token.fresh():
            if self.sign_in.kind == "pro":
                self._portal_token = self._pro_token()
            elif self.sign_in.kind == "app":
                self._portal_token = self._app_token()
            else:
                self._portal_token = self._sign_in(f"{self.portal}/sharing/rest/generateToken")
        return self._portal_token.value

    def _pro_token(self) -> Token:
        """ArcGIS Pro's token, asked for again each time one is needed (Pro renews it)."""
        way = pro_sign_in(self.portal)
        if way is None:
            raise ArcGISError(
                f"ArcGIS Pro is no longer signed in to {self.portal}: sign in again in Pro"
            )
        self.sign_in = way
        if way.referer:
            self.referer = way.referer
        expires = way.expires if way.expires > 0 else time.time() + 60 * self.token_minutes
        if expires > 1e11:  # epoch milliseconds, as REST answers give them
            expires /= 1000
        if not way.token or expires <= time.time():
            raise ArcGISError(
                f"ArcGIS Pro is no longer signed in to {self.portal}: sign in again in Pro"
            )
        return Token(way.token, expires)

    def _app_token(self) -> Token:
        """An app token from ``oauth2/token`` (``grant_type=client_credentials``)."""
        if not self.username:
            raise ArcGISError(
                "with app credentials, set ARCGIS_USERNAME to the portal user who owns the "
                "item (no password needed): item URLs name the owner"
            )
        form = {
            "client_id": self.sign_in.client_id,
            "client_secret": self.sign_in.client_secret.get(),
            "grant_type": "client_credentials",
            "expiration": str(self.token_minutes),
            "f": "json",
        }
        url = f"{self.portal}/sharing/rest/oauth2/token"
        body = self._send("POST", url, data=form, auth=None)
        value = body.get("access_token")
        if not value:
            raise ArcGISError("the portal returned no app token; check ARCGIS_CLIENT_ID/SECRET")
        expires = time.time() + float(body.get("expires_in") or 60 * self.token_minutes)
        return Token(Secret(str(value)), expires)

    def _form(self) -> dict[str, str]:
        return {
            "client": "referer",
            "referer": self.referer,
            "expiration": str(self.token_minutes),
            "f": "json",
        }

    def _sign_in(self, url: str) -> Token:
        form = {"username": self.username, "password": self._password.get(), **self._form()}
        try:
            return self._token_from(self._send("POST", url, data=form, auth=None))
        except ArcGISError as exc:
            if exc.code != 401 and self._web_tier_auth(url):
                raise ArcGISError(iwa_message(url), code=exc.code) from None
            raise

    def _web_tier_auth(self, token_url: str) -> bool:
        """The site's ``info`` says it does not use ArcGIS tokens (web-tier IWA/SAML)."""
        base = token_url.rsplit("/", 1)[0]  # .../sharing/rest or .../tokens
        info_url = f"{base}/info" if base.endswith("/sharing/rest") else f"{self.server}/rest/info"
        try:
            body = self._send("GET", f"{info_url}?f=json", auth=None)
        except ArcGISError:
            return False
        auth = body.get("authInfo") if isinstance(body, dict) else None
        return isinstance(auth, dict) and auth.get("isTokenBasedSecurity") is False

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

    def cache_task(self, preferred: str = CACHE_TASKS[0]) -> str:
        """The site's *Manage Map Cache Tiles* task: ``preferred``, else the other of
        ``System/CachingControllers`` and ``System/CachingTools`` (sites without
        CachingControllers run cache jobs on CachingTools)."""
        cached = self._tasks.get(preferred)
        if cached:
            return cached
        tool = preferred.rsplit("/GPServer/", 1)[-1]
        swap = {"System/CachingControllers/": "System/CachingTools/"}
        swap |= {v: k for k, v in swap.items()}
        candidates = [preferred]
        for a, b in swap.items():
            if preferred.startswith(a):
                candidates.append(b + preferred[len(a) :])
        for task in candidates:
            try:
                self.get(f"rest/services/{task}")
            except ArcGISError as exc:
                if exc.code in (400, 404):
                    log.info("%s not on this site: %s", task, exc)
                    continue
                raise
            self._tasks[preferred] = task
            return task
        raise ArcGISError(
            f"{self.server} has no {tool} task under System/CachingControllers or "
            "System/CachingTools; check [arcgis] server and that caching is enabled"
        )

    def submit(self, task: str, **params) -> str:
        body = self.post(f"rest/services/{task}/submitJob", **params)
        job = body.get("jobId")
        if not job:
            raise ArcGISError(f"{task}: the server returned no job id")
        return job

    def job(self, task: str, job_id: str, *, path: str | None = None) -> dict:
        """A job's status with its messages (``returnMessages=true``)."""
        return self.get(path or f"rest/services/{task}/jobs/{job_id}", returnMessages="true")

    def cancel(self, task: str, job_id: str, *, path: str | None = None) -> None:
        try:
            self.post(f"{path or f'rest/services/{task}/jobs/{job_id}'}/cancel")
        except ArcGISError as exc:
            log.warning("could not cancel job %s: %s", job_id, exc)

    def wait_job(
        self,
        task: str,
        job_id: str,
        *,
        poll: float = 2.0,
        timeout: float = 3600.0,
        settle: float = SETTLE_SECONDS,
        on_message: Callable[[str], None] | None = None,
        path: str | None = None,
    ) -> dict:
        """Poll a job until it ends; Ctrl-C cancels it on the server.

        Returns the last status, with ``summary``: one line on how it ended and the
        server's last error messages (:func:`job_summary`). Every state of
        :data:`JOB_END` ends the poll at once. A job that is cancelling is followed until
        it is cancelled, and one in a state this client does not know until it leaves
        it, each at most ``settle`` seconds. After ``timeout`` the job is cancelled.
        ``path`` is the job resource when it is not ``rest/services/<task>/jobs/<id>``
        (a hosted service's ``importTiles`` job).
        """
        seen = 0
        deadline = time.monotonic() + timeout
        odd_since: float | None = None
        try:
            while True:
                status = self.job(task, job_id, path=path)
                status.setdefault("jobId", job_id)
                if "jobStatus" not in status and "status" in status:  # hosted service jobs
                    status["jobStatus"] = status["status"]
                messages = status.get("messages") or []
                for m in messages[seen:]:
                    if on_message:
                        on_message(str(m.get("description", "")))
                seen = len(messages)
                state = status.get("jobStatus")
                now = time.monotonic()
                if state in JOB_DONE:
                    break
                if state in JOB_RUNNING:
                    odd_since = None
                else:  # cancelling, or a state we do not know: follow it, bounded
                    odd_since = now if odd_since is None else odd_since
                    if now - odd_since > settle:
                        break
                if now > deadline:
                    self.cancel(task, job_id, path=path)
                    status["timedOutLocally"] = True
                    status["jobStatus"] = "esriJobTimedOut"
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            self.cancel(task, job_id, path=path)
            raise
        status["summary"] = self._scrub(job_summary(status, task.rsplit("/", 1)[-1] + " job"))
        return status

    # -- uploads: the Administrator API ----------------------------------------------------
    def upload(
        self,
        path: Path,
        *,
        part_bytes: int = DEFAULT_PART_BYTES,
        progress: Callable[[int, int], None] | None = None,
        resume_dir: Path | None = None,
        description: str = "",
        gp_service: str | None = None,
    ) -> str:
        """Upload a file (e.g. a staged .sd) to the server; return its upload item id.

        A file larger than ``part_bytes`` goes in parts (``uploads/register``,
        ``uploadPart`` from 1, ``commit``). With ``resume_dir`` the upload id and the
        acknowledged parts are kept there, so a run that died resumes: the server is
        asked which parts it holds (``uploads/{id}/parts``) and only the rest is sent.

        With ``gp_service`` (e.g. ``System/CachingTools``) the file goes to that GP
        service's own uploads (``rest/services/<gp>/GPServer/uploads``: fields ``file``
        and ``partId``), as a GP task's file parameter needs (``{"itemID": ...}``).
        """
        path = Path(path)
        size = path.stat().st_size
        base = f"rest/services/{gp_service}/GPServer/uploads" if gp_service else "admin/uploads"
        file_field, part_file, part_num = (
            ("file", "file", "partId") if gp_service else ("itemFile", "partFile", "partNumber")
        )
        if size <= part_bytes:
            with open(path, "rb") as fh:
                body = self.post(
                    f"{base}/upload",
                    files={file_field: (path.name, fh)},
                    description=description,
                )
            item = (body.get("item") or {}).get("itemID")
            if not item:
                raise ArcGISError(f"upload of {path.name} returned no item id")
            if progress:
                progress(size, size)
            return item
        store = ResumeStore(resume_dir)
        target = f"{self.server}/{base}"
        rec = store.load("admin", target, path, part_bytes)
        if rec is not None:
            try:
                body = self.get(f"{base}/{rec.upload_id}/parts")
                rec.done = sorted({int(p) for p in body.get("parts") or []})
                log.info(
                    "resuming upload %s: the server holds %d part(s)", rec.upload_id, len(rec.done)
                )
            except ArcGISError as exc:
                log.info("cannot resume upload %s (%s); starting again", rec.upload_id, exc)
                rec = None
        if rec is None:
            body = self.post(f"{base}/register", itemName=path.name, description=description)
            rec = store.new("admin", target, path, part_bytes)
            rec.upload_id = str((body.get("item") or {}).get("itemID") or "")
            if not rec.upload_id:
                raise ArcGISError(f"uploads/register for {path.name} returned no item id")
            store.save(rec)
        upload_id = rec.upload_id

        def send(number: int, data: bytes) -> None:
            self.post(
                f"{base}/{upload_id}/uploadPart",
                files={part_file: (f"{path.name}.{number}", data, "application/octet-stream")},
                **{part_num: str(number)},
            )

        n = self._send_parts(rec, path, send, store, progress)
        self.post(f"{base}/{upload_id}/commit", parts=",".join(map(str, range(1, n + 1))))
        store.clear(rec)
        return upload_id

    def _send_parts(
        self,
        rec: UploadRecord,
        path: Path,
        send: Callable[[int, bytes], None],
        store: ResumeStore,
        progress: Callable[[int, int], None] | None,
        tries: int = 3,
    ) -> int:
        """Send the parts of ``path`` not in ``rec.done``, recording each one the server
        acknowledged; a part that fails is sent again (``tries`` times). Returns the
        number of parts."""
        n = part_count(rec.size, rec.part_bytes)
        done = set(rec.done) & set(range(1, n + 1))

        def sent_bytes() -> int:
            return sum(min(rec.part_bytes, rec.size - (k - 1) * rec.part_bytes) for k in done)

        if progress:
            progress(sent_bytes(), rec.size)
        for number in range(1, n + 1):
            if number in done:
                continue
            data = read_part(path, number, rec.part_bytes)
            for attempt in range(tries):
                try:
                    send(number, data)
                    break
                except ArcGISError as exc:
                    if exc.code == 413 or attempt == tries - 1:
                        raise ArcGISError(
                            f"{path.name}: part {number} of {n} was refused: {exc}", code=exc.code
                        ) from None
                    log.info("part %d of %s failed (%s); sending it again", number, path.name, exc)
            done.add(number)
            rec.done = sorted(done)
            store.save(rec)
            if progress:
                progress(sent_bytes(), rec.size)
        return n

    # -- portal items ------------------------------------------------------------------------
    def _user_url(self) -> str:
        if not self.portal:
            raise ArcGISError("[arcgis] portal is not set: cannot reach the portal item")
        return f"{self.portal}/sharing/rest/content/users/{quote(self.username, safe='')}"

    def _item_url(self, item_id: str) -> str:
        return f"{self._user_url()}/items/{quote(item_id, safe='')}"

    def _portal_post(self, url: str, files=None, **data) -> dict:
        data.setdefault("f", "json")
        body = self._send("POST", url, data=data, files=files, auth="portal")
        if body.get("success") is False:
            raise ArcGISError(f"{urlsplit(url).path}: the portal answered success=false")
        return body

    def get_item(self, item_id: str) -> dict:
        """The portal item's JSON (title, description, thumbnail, size ...)."""
        body = self._send("GET", f"{self._item_url(item_id)}?f=json", auth="portal")
        return body.get("item", body)

    def item_status(self, item_id: str) -> dict:
        """The item's ``status`` (``partial``, ``processing``, ``completed``, ``failed``)."""
        return self._send("GET", f"{self._item_url(item_id)}/status?f=json", auth="portal")

    def update_item(
        self, item_id: str, *, thumbnail: bytes | None = None, files=None, **fields
    ) -> dict:
        """Update a portal item (thumbnail and/or fields such as description).

        The request carries the portal token. ``files`` adds multipart parts
        (``{"file": (name, fileobj, type)}``).
        """
        parts = dict(files or {})
        if thumbnail:
            parts["thumbnail"] = ("thumbnail.png", thumbnail, "image/png")
        return self._portal_post(f"{self._item_url(item_id)}/update", files=parts or None, **fields)

    def delete_item(self, item_id: str) -> None:
        """Delete a portal item (e.g. a patch package once imported)."""
        self._portal_post(f"{self._item_url(item_id)}/delete")

    def add_item(
        self,
        path: Path,
        *,
        type: str,
        title: str,
        part_bytes: int = DEFAULT_PART_BYTES,
        progress: Callable[[int, int], None] | None = None,
        resume_dir: Path | None = None,
        **fields: str,
    ) -> str:
        """Add ``path`` as a new portal item; return its id. Large files go in parts."""
        path = Path(path)
        info = {"type": type, "title": title, **fields}
        if path.stat().st_size <= part_bytes:
            with open(path, "rb") as fh:
                body = self._portal_post(
                    f"{self._user_url()}/addItem",
                    files={"file": (path.name, fh, "application/octet-stream")},
                    filename=path.name,
                    **info,
                )
            if progress:
                progress(path.stat().st_size, path.stat().st_size)
            return str(body["id"])
        return self._item_multipart(
            path, None, info, part_bytes=part_bytes, progress=progress, resume_dir=resume_dir
        )

    def upload_item_file(
        self,
        item_id: str,
        path: Path,
        *,
        part_bytes: int = DEFAULT_PART_BYTES,
        progress: Callable[[int, int], None] | None = None,
        resume_dir: Path | None = None,
    ) -> dict:
        """Replace the portal item's data with ``path`` (e.g. a .tpkx tile package).

        A file larger than ``part_bytes`` goes as a multipart ``update`` (``addPart``,
        ``commit``, then ``status`` until completed).
        """
        path = Path(path)
        size = path.stat().st_size
        if size <= part_bytes:
            with open(path, "rb") as fh:
                body = self.update_item(
                    item_id, files={"file": (path.name, fh, "application/octet-stream")}
                )
            if progress:
                progress(size, size)
            return body
        self._item_multipart(
            path, item_id, {}, part_bytes=part_bytes, progress=progress, resume_dir=resume_dir
        )
        return {"success": True, "id": item_id}

    def _item_multipart(
        self,
        path: Path,
        item_id: str | None,
        info: dict[str, str],
        *,
        part_bytes: int,
        progress: Callable[[int, int], None] | None,
        resume_dir: Path | None,
        status_timeout: float = 600.0,
    ) -> str:
        """``addItem`` or ``update`` with ``multipart=true``, ``addPart`` from 1, ``commit``.

        A portal lists no parts, so a resumed upload trusts the local record of the
        parts it acknowledged while the item's ``status`` is still ``partial`` (a part
        sent again under the same number replaces the earlier one).
        """
        store = ResumeStore(resume_dir)
        target = f"{self._user_url()}#{item_id or 'new'}"
        rec = store.load("item", target, path, part_bytes)
        if rec is not None:
            try:
                state = self.item_status(rec.upload_id).get("status")
            except ArcGISError:
                state = None
            if state != "partial":
                log.info("cannot resume the upload of item %s (%s)", rec.upload_id, state)
                rec = None
        if rec is None:
            form = {"multipart": "true", "filename": path.name, **info}
            if item_id:
                body = self._portal_post(f"{self._item_url(item_id)}/update", **form)
            else:
                body = self._portal_post(f"{self._user_url()}/addItem", **form)
            rec = store.new("item", target, path, part_bytes)
            rec.upload_id = str(body.get("id") or item_id or "")
            if not rec.upload_id:
                raise ArcGISError(f"the portal returned no item id for {path.name}")
            store.save(rec)
        url = self._item_url(rec.upload_id)

        def send(number: int, data: bytes) -> None:
            self._portal_post(
                f"{url}/addPart",
                files={"file": (path.name, data, "application/octet-stream")},
                partNum=str(number),
            )

        self._send_parts(rec, path, send, store, progress)
        self._portal_post(f"{url}/commit", **({"id": rec.upload_id} | info))
        deadline = time.monotonic() + status_timeout
        while True:
            status = self.item_status(rec.upload_id)
            state = status.get("status")
            if state == "completed":
                break
            if state == "failed" or time.monotonic() > deadline:
                raise ArcGISError(
                    f"the portal did not finish item {rec.upload_id} ({path.name}): "
                    f"status {state}: {status.get('statusMessage') or 'no message'}"
                )
            time.sleep(0.5)
        store.clear(rec)
        return rec.upload_id

    # -- hosted tile layers -----------------------------------------------------------------
    def import_tiles(
        self,
        service: str,
        source_item_id: str,
        *,
        levels: list[int] | None = None,
        extent: dict | None = None,
        merge: bool = True,
        replace: bool = True,
    ) -> str:
        """``importTiles`` on a hosted tile layer's admin endpoint; return the job id.

        ``mergeBundle`` merges the package's bundles into the service's (instead of
        overwriting them) and ``replaceTiles`` lets its tiles replace existing ones.
        """
        params: dict[str, str] = {
            "sourceItemId": source_item_id,
            "mergeBundle": json.dumps(merge),
            "replaceTiles": json.dumps(replace),
        }
        if levels:
            params["levels"] = ",".join(map(str, sorted(levels)))
        if extent:
            params["extent"] = json.dumps(extent)
        body = self.post(f"{self.hosted_admin(service)}/importTiles", **params)
        job = body.get("jobId")
        if not job:
            raise ArcGISError(f"importTiles on {service}: the server returned no job id")
        return str(job)

    @staticmethod
    def hosted_admin(service: str) -> str:
        """The admin path of a hosted service, as the ArcGIS API for Python builds it
        (``rest/services/`` → ``rest/admin/services/``)."""
        return f"rest/admin/services/{service.strip('/')}/MapServer"
