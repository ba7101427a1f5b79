"""Secrets and sign-in ways: read from the environment, the project's ``.env`` or ArcGIS
Pro's active portal sign-in; never printed.

Three ways to sign in to ArcGIS Enterprise (:func:`sign_in_for` picks one):

1. **ArcGIS Pro's sign-in**: where ``arcpy`` is importable and Pro is signed in to the
   configured portal, ``arcpy.GetSigninToken()`` gives a portal token; no password is
   stored anywhere. It is the only way for portals that use Windows (IWA) or SAML logins.
2. **A built-in account**: ``ARCGIS_USERNAME`` / ``ARCGIS_PASSWORD``.
3. **OAuth app credentials**: ``ARCGIS_CLIENT_ID`` / ``ARCGIS_CLIENT_SECRET`` (portal
   only). An app token acts for no user, so it cannot publish, upload to the server or
   run cache jobs; it serves the portal item updates (thumbnail, description, package).
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from tiledelta.errors import ConfigError


class Secret:
    """A string that prints as ``***``."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def env_value(project_root: Path, name: str) -> str | None:
    """``name`` from the environment, else from ``project_root/.env``; None when unset."""
    value = os.environ.get(name)
    if value:
        return value
    env_file = Path(project_root) / ".env"
    if env_file.is_file():
        return read_env_file(env_file).get(name) or None
    return None


def read_env_file(path: Path) -> dict[str, str | None]:
    """The values of a ``.env`` file; :class:`ConfigError` naming the file and the lines
    that cannot be parsed (python-dotenv would skip each with a warning, at every read).
    The lines' text is never shown: it may hold a secret."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    if bad:
        where = f"line {bad[0]}" if len(bad) == 1 else f"lines {', '.join(map(str, bad))}"
        raise ConfigError(
            f"{path}: {where} cannot be parsed; write NAME=value, quoting a value that holds "
            "spaces or quotes with matching quotes"
        )
    return dotenv_values(stream=io.StringIO(text))


class CredentialsError(ConfigError):
    """No usable way to sign in."""


@dataclass(frozen=True)
class SignIn:
    """One way of signing in: ``password``, ``app`` (OAuth client credentials) or ``pro``."""

    kind: Literal["password", "app", "pro"]
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    client_id: str = ""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    #: Pro's portal token, its referer and expiry (epoch seconds)
    token: Secret = field(default_factory=lambda: Secret(""))
    referer: str = ""
    expires: float = 0.0

    def describe(self) -> str:
        """Which way, without any secret."""
        if self.kind == "pro":
            return "ArcGIS Pro's active portal sign-in"
        if self.kind == "app":
            return f"the OAuth app credentials (client id {self.client_id})"
        return f"the built-in account {self.username}"

    def secrets(self) -> list[str]:
        """Every secret value, for scrubbing messages."""
        return [s.get() for s in (self.password, self.client_secret, self.token) if s]


def same_url(a: str | None, b: str | None) -> bool:
    """Two portal URLs name the same portal (case, scheme default port, trailing slash)."""
    if not a or not b:
        return False
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def pro_sign_in(portal: str | None) -> SignIn | None:
    """ArcGIS Pro's active sign-in to ``portal``, when arcpy is importable and signed in."""
    if not portal or importlib.util.find_spec("arcpy") is None:
        return None
    try:
        import arcpy  # only inside ArcGIS Pro's Python

        active = arcpy.GetActivePortalURL()
        tok: Any = arcpy.GetSigninToken()
    except Exception:  # arcpy present but unlicensed, or no Pro session
        return None
    if not isinstance(tok, dict) or not tok.get("token") or not same_url(active, portal):
        return None
    return SignIn(
        "pro",
        token=Secret(str(tok["token"])),
        referer=str(tok.get("referer") or ""),
        expires=float(tok.get("expires") or 0),
    )


def sign_in_for(project_root: Path, portal: str | None = None) -> SignIn:
    """The way to sign in: Pro's sign-in to ``portal``, else a built-in account, else app
    credentials (with a portal). Raises :class:`CredentialsError` naming what to set."""
    pro = pro_sign_in(portal)
    if pro is not None:
        return pro
    user = env_value(project_root, "ARCGIS_USERNAME")
    password = env_value(project_root, "ARCGIS_PASSWORD")
    if user and password:
        return SignIn("password", username=user, password=Secret(password))
    client_id = env_value(project_root, "ARCGIS_CLIENT_ID")
    client_secret = env_value(project_root, "ARCGIS_CLIENT_SECRET")
    if client_id and client_secret:
        if not portal:
            raise CredentialsError(
                "ARCGIS_CLIENT_ID/ARCGIS_CLIENT_SECRET are app credentials of a portal: set "
                "[arcgis] portal, or use ARCGIS_USERNAME and ARCGIS_PASSWORD for this server"
            )
        return SignIn(
            "app", username=user or "", client_id=client_id, client_secret=Secret(client_secret)
        )
    raise CredentialsError(
        "ArcGIS credentials missing: set ARCGIS_USERNAME and ARCGIS_PASSWORD (or "
        "ARCGIS_CLIENT_ID and ARCGIS_CLIENT_SECRET for a portal app) in the environment or "
        f"in {Path(project_root) / '.env'} (see sample.env), or run inside ArcGIS Pro signed "
        "in to the portal"
    )
