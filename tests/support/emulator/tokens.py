"""Tokens: ``generateToken``, checking a request's token, and its client binding.

The server and the portal keep separate token tables (``_tokens`` and
``_portal_tokens``); both are issued and checked here. The portal's sign-in modes are
here too: OAuth app credentials (``oauth2/token`` with ``grant_type=client_credentials``,
apps registered with :meth:`TokensMixin.add_oauth_app`) and a Windows-login (IWA)
portal (``portal_auth = "iwa"``), which answers 401 ``WWW-Authenticate: Negotiate`` to
every request that carries no valid portal token, or a web-tier portal
(``portal_auth = "web-tier"``, e.g. SAML). :meth:`TokensMixin.issue_portal_token`
stands for a sign-in made outside REST (ArcGIS Pro's Windows sign-in).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable

from .model import Faults, Request, Response, Token, admin_error, json_response, rest_error

#: The ``client`` of an app token: bound to no referer or IP (OAuth bearer tokens).
APP_CLIENT = "oauth-app"


class TokensMixin:
    """Token handling of :class:`~support.emulator.server.Emulator` (uses its state)."""

    username: str
    _password: str
    token_minutes: int
    max_token_minutes: int
    faults: Faults
    clock: Callable[[], float]
    _lock: threading.RLock
    _tokens: dict[str, Token]
    _portal_tokens: dict[str, Token]

    #: "builtin": portal accounts sign in with generateToken; "iwa": Windows logins (401
    #: Negotiate without a portal token); "web-tier": ``info`` says isTokenBasedSecurity
    #: false and built-in accounts are refused (SAML or web-tier logins)
    portal_auth: str = "builtin"

    # -- OAuth apps and IWA (the portal's other sign-in ways) ------------------------------
    def add_oauth_app(self, client_id: str, client_secret: str) -> None:
        """Register an OAuth app (owned by the emulator's user) for client credentials."""
        with self._lock:
            apps: dict[str, str] = self.__dict__.setdefault("_oauth_apps", {})
            apps[client_id] = client_secret

    def issue_portal_token(self, referer: str, minutes: float = 60.0) -> str:
        """A portal token for the emulator's user, bound to ``referer``: what ArcGIS Pro
        holds after a sign-in the emulator does not speak (e.g. Windows logins)."""
        value = secrets.token_urlsafe(48)
        with self._lock:
            self._portal_tokens[value] = Token(
                self._now_ms() + int(minutes * 60_000), "referer", referer, ""
            )
        return value

    def _app_tokens(self) -> set[str]:
        return self.__dict__.setdefault("_app_token_values", set())

    def _portal(self, req: Request, seg: list[str]) -> Response:
        """Sign-in modes in front of the portal's routes (the rest is PortalMixin's)."""
        if self.portal_auth == "iwa" and (
            not req.token or self._check_token(req, self._portal_tokens) is not None
        ):
            body = b"<html><body><h1>401 Unauthorized</h1>Windows authentication</body></html>"
            headers = {"WWW-Authenticate": "Negotiate"}
            return Response(401, body, "text/html; charset=utf-8", headers)
        if self.portal_auth == "web-tier" and seg == ["sharing", "rest", "info"]:
            return json_response(
                {"owningSystemUrl": self.portal_url, "authInfo": {"isTokenBasedSecurity": False}},
                req.pretty,
            )
        web_sign_in = seg == ["sharing", "rest", "generateToken"] and req.params.get("username")
        if self.portal_auth == "web-tier" and web_sign_in:
            detail = "Built-in accounts cannot sign in: the portal uses web-tier logins."
            return json_response(rest_error(400, "Unable to generate token.", [detail]))
        if seg == ["sharing", "rest", "oauth2", "token"]:
            return json_response(self._oauth_token(req), req.pretty)
        if (
            seg == ["sharing", "rest", "generateToken"]
            and req.token in self._app_tokens()
            and req.params.get("serverUrl")
        ):
            return json_response(
                rest_error(
                    403,
                    "Unable to generate token.",
                    ["An app token acts for no user and cannot be exchanged for a server token."],
                ),
                req.pretty,
            )
        return super()._portal(req, seg)  # type: ignore[misc]

    def _oauth_token(self, req: Request) -> dict:
        """``oauth2/token``: ``client_credentials`` only (an app login)."""
        p = req.params
        if req.method != "POST":
            return {"error": {"code": 405, "error": "invalid_request", "message": "Use POST."}}
        if p.get("grant_type") != "client_credentials":
            return {
                "error": {
                    "code": 400,
                    "error": "unsupported_grant_type",
                    "message": "The emulator supports grant_type=client_credentials only.",
                }
            }
        apps: dict[str, str] = self.__dict__.get("_oauth_apps", {})
        cid, secret = p.get("client_id", ""), p.get("client_secret", "")
        known = apps.get(cid)
        if known is None or not hmac.compare_digest(secret.encode(), known.encode()):
            return {
                "error": {
                    "code": 400,
                    "error": "invalid_client_id" if known is None else "invalid_client",
                    "error_description": "Invalid client_id or client_secret",
                    "message": "Invalid client_id or client_secret",
                    "details": [],
                }
            }
        try:
            minutes = min(float(p.get("expiration") or 120), float(self.max_token_minutes))
        except ValueError:
            minutes = 120.0
        value = secrets.token_urlsafe(48)
        with self._lock:
            self._portal_tokens[value] = Token(
                self._now_ms() + int(minutes * 60_000), APP_CLIENT, "", ""
            )
            self._app_tokens().add(value)
        return {"access_token": value, "expires_in": int(minutes * 60)}

    def expire_tokens_now(self) -> None:
        """Every token issued so far becomes invalid (requests using it get 498)."""
        with self._lock:
            self._tokens.clear()
            self._portal_tokens.clear()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _check_token(self, req: Request, tokens: dict[str, Token] | None = None) -> int | None:
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

    def _generate_token(self, req: Request, admin: bool) -> dict:
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
        req: Request,
        tokens: dict[str, Token],
        fail: Callable[..., dict],
        *,
        inherit: Token | None = None,
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
            tokens[value] = Token(expires, client, referer, ip)
        return {"token": value, "expires": expires, "ssl": False}
