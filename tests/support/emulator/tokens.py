"""Tokens: ``generateToken``, checking a request's token, and its client binding.

The server and the portal keep separate token tables (``_tokens`` and
``_portal_tokens``); both are issued and checked here.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable

from .model import Faults, Request, Token, admin_error, rest_error


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
