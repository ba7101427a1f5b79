"""A stand-in ``arcpy`` for tests: the parts of ArcGIS Pro's arcpy that tiledelta uses.

ArcGIS Pro cannot run here. This package is importable as ``arcpy`` when
``tests/support`` is on ``sys.path``; it is test support, not shipped in the wheel.
It is at least as strict as arcpy where tiledelta relies on arcpy's behaviour (parameter
types and directions, sign-in before a federated draft, draft and .sd formats), and
``docs/arcpy-stand-in.md`` lists point by point where it is still more lenient.

Implemented: :class:`Parameter` and :class:`Filter`; ``AddMessage``/``AddWarning``/
``AddError``/``GetMessages``; the progressor functions; :class:`ExecuteError`;
``GetSigninToken``, ``SignInToPortal``, ``GetActivePortalURL``; ``arcpy.mp``
(``ArcGISProject``, ``Map``, ``CreateGISServerConnectionFile``); ``arcpy.sharing``
(``CreateSharingDraft``, the map image and map service drafts, ``exportToSDDraft``);
``arcpy.server`` (``StageService``, ``UploadServiceDefinition``). Test hooks live in
:mod:`arcpy.standin`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from . import _state

#: Parameter data types the stand-in accepts (a subset of Pro's; others raise).
DATATYPES = frozenset(
    {
        "DEFolder",
        "DEFile",
        "DEWorkspace",
        "GPString",
        "GPBoolean",
        "GPLong",
        "GPDouble",
        "GPMap",
        "DEMapDocument",
        "GPFeatureLayer",
        "DEFeatureClass",
        "GPExtent",
        "GPDate",
        "GPType",
    }
)
PARAMETER_TYPES = ("Required", "Optional", "Derived")
DIRECTIONS = ("Input", "Output")
FILTER_TYPES = ("ValueList", "Range", "FeatureClass", "File", "Field", "Workspace")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExecuteError(Exception):
    """A geoprocessing tool failed (arcpy's ``arcgisscripting.ExecuteError``)."""


# -------------------------------------------------------------------------------- messages


def _add(severity: str, text: object) -> None:
    s = _state.session
    s.messages.append((severity, str(text)))
    if s.echo:
        print({"0": "", "1": "WARNING: ", "2": "ERROR: "}[severity] + str(text), flush=True)


def AddMessage(message: object) -> None:  # noqa: N802 - arcpy's names
    """An informative message in the geoprocessing pane."""
    _add("0", message)


def AddWarning(message: object) -> None:  # noqa: N802
    """A warning message."""
    _add("1", message)


def AddError(message: object) -> None:  # noqa: N802
    """An error message (the tool still has to raise to fail)."""
    _add("2", message)


def GetMessages(severity: int = 0) -> str:  # noqa: N802
    """Messages of at least ``severity`` (0 all, 1 warnings and errors, 2 errors)."""
    if severity not in (0, 1, 2):
        raise ValueError("severity must be 0, 1 or 2")
    return "\n".join(t for sev, t in _state.session.messages if int(sev) >= severity)


# ------------------------------------------------------------------------------ progressor


def SetProgressor(  # noqa: N802
    type: str = "default",  # noqa: A002 - arcpy's keyword
    message: str = "",
    min_range: int = 0,
    max_range: int = 100,
    step_value: int = 1,
) -> None:
    """Start a ``default`` or ``step`` progressor."""
    if type not in ("default", "step"):
        raise ValueError(f"SetProgressor: type must be 'default' or 'step', not {type!r}")
    if type == "step" and not (min_range < max_range and step_value > 0):
        raise ValueError("SetProgressor: a step progressor needs min_range < max_range, step > 0")
    p = {"type": type, "label": message, "min": min_range, "max": max_range, "pos": min_range}
    _state.session.progressor = p
    _state.session.progress_log.append({"call": "SetProgressor", **p})


def SetProgressorLabel(label: str) -> None:  # noqa: N802
    """Change the progressor's label."""
    _state.session.progressor["label"] = str(label)
    _state.session.progress_log.append({"call": "SetProgressorLabel", "label": str(label)})


def SetProgressorPosition(position: int | None = None) -> None:  # noqa: N802
    """Move a step progressor (one step without ``position``)."""
    p = _state.session.progressor
    if p.get("type") != "step":
        raise RuntimeError("SetProgressorPosition needs a step progressor (SetProgressor)")
    pos = p["pos"] + 1 if position is None else int(position)
    p["pos"] = max(p["min"], min(p["max"], pos))
    _state.session.progress_log.append({"call": "SetProgressorPosition", "pos": p["pos"]})


def ResetProgressor() -> None:  # noqa: N802
    """Back to the default progressor."""
    _state.session.progressor = {}
    _state.session.progress_log.append({"call": "ResetProgressor"})


# ------------------------------------------------------------------------------ parameters


class Filter:
    """A parameter's filter: ``type`` and ``list``."""

    def __init__(self) -> None:
        self._type: str | None = None
        self._list: list[Any] = []

    @property
    def type(self) -> str | None:
        return self._type

    @type.setter
    def type(self, value: str) -> None:
        if value not in FILTER_TYPES:
            raise ValueError(f"filter type {value!r} is not one of {', '.join(FILTER_TYPES)}")
        self._type = value

    @property
    def list(self) -> list[Any]:
        return list(self._list)

    @list.setter
    def list(self, values: list[Any]) -> None:
        if self._type is None:
            raise ValueError("set the filter's type before its list")
        values = list(values)
        if self._type == "Range" and len(values) != 2:
            raise ValueError("a Range filter's list is [minimum, maximum]")
        self._list = values

    def allows(self, value: object) -> str | None:
        """None when ``value`` passes, else the error text Pro would show."""
        if value is None or not self._list:
            return None
        if self._type == "ValueList" and value not in self._list:
            return f"The value is not a member of {' | '.join(map(str, self._list))}."
        if self._type == "File":
            ext = str(value).rsplit(".", 1)[-1].lower() if "." in str(value) else ""
            if ext not in [str(e).lower().lstrip(".") for e in self._list]:
                return f"The file type is not one of {', '.join(map(str, self._list))}."
        if self._type == "Range":
            lo, hi = self._list
            if not (lo <= value <= hi):  # type: ignore[operator]
                return f"The value is out of the range from {lo} to {hi}."
        return None


class Parameter:
    """A tool parameter, as ``arcpy.Parameter`` (checked when it is made, as in Pro)."""

    def __init__(
        self,
        name: str | None = None,
        displayName: str | None = None,  # noqa: N803 - arcpy's keywords
        direction: str | None = None,
        datatype: str | None = None,
        parameterType: str | None = None,  # noqa: N803
        enabled: bool | None = None,
        category: str | None = None,
        symbology: str | None = None,
        multiValue: bool | None = None,  # noqa: N803
    ) -> None:
        if not name or not _NAME_RE.match(name):
            raise ValueError(f"Parameter name {name!r}: letters, digits and underscores only")
        if not displayName:
            raise ValueError(f"Parameter {name}: displayName is required")
        if datatype not in DATATYPES:
            raise ValueError(f"Parameter {name}: datatype {datatype!r} is not a known data type")
        if parameterType not in PARAMETER_TYPES:
            raise ValueError(f"Parameter {name}: parameterType must be one of {PARAMETER_TYPES}")
        if direction not in DIRECTIONS:
            raise ValueError(f"Parameter {name}: direction must be Input or Output")
        if parameterType == "Derived" and direction != "Output":
            raise ValueError(f"Parameter {name}: a Derived parameter must be an Output")
        self.name = name
        self.displayName = displayName
        self.direction = direction
        self.datatype = datatype
        self.parameterType = parameterType
        self.enabled = True if enabled is None else bool(enabled)
        self.category = category
        self.symbology = symbology
        self.multiValue = bool(multiValue)
        self.filter = Filter()
        self.altered = False
        self.hasBeenValidated = False
        self.parameterDependencies: list[int] = []
        self._value: Any = None
        self._message: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Parameter {self.name} ({self.datatype}) = {self._value!r}>"

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, v: Any) -> None:
        if v is not None and self.datatype == "GPBoolean" and not isinstance(v, bool):
            raise TypeError(f"Parameter {self.name}: a GPBoolean takes True or False")
        if (
            v is not None
            and self.datatype == "GPLong"
            and (isinstance(v, bool) or not isinstance(v, int))
        ):
            raise TypeError(f"Parameter {self.name}: a GPLong takes an integer")
        self._value = v
        self.altered = True

    @property
    def valueAsText(self) -> str | None:  # noqa: N802
        v = self._value
        if v is None or v == "":
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        if hasattr(v, "name") and self.datatype == "GPMap":
            return str(v.name)
        return str(v)

    def setErrorMessage(self, message: str) -> None:  # noqa: N802
        self._message = ("error", str(message))

    def setWarningMessage(self, message: str) -> None:  # noqa: N802
        self._message = ("warning", str(message))

    def clearMessage(self) -> None:  # noqa: N802
        self._message = None

    def hasError(self) -> bool:  # noqa: N802
        return bool(self._message and self._message[0] == "error")

    def hasWarning(self) -> bool:  # noqa: N802
        return bool(self._message and self._message[0] == "warning")

    @property
    def message(self) -> str:
        return self._message[1] if self._message else ""

    def check(self) -> None:
        """Pro's own checks before ``execute``: required values and filters."""
        if not self.enabled:
            return
        if (
            self.parameterType == "Required"
            and self.direction == "Input"
            and self.valueAsText is None
        ):
            self.setErrorMessage("ERROR 000735: Value is required")
            return
        problem = self.filter.allows(self._value)
        if problem:
            self.setErrorMessage(problem)


# -------------------------------------------------------------------------------- sign-in


def GetActivePortalURL() -> str:  # noqa: N802
    """The active portal's URL (Pro's default, ArcGIS Online, when none was chosen)."""
    return _state.session.portal_url or _state.DEFAULT_PORTAL


def GetSigninToken() -> dict[str, Any] | None:  # noqa: N802
    """``{"token", "referer", "expires"}`` of the active portal sign-in, or None."""
    s = _state.session
    if not s.token or s.expires <= time.time():
        return None
    return {"token": s.token, "referer": s.referer, "expires": s.expires}


def SignInToPortal(  # noqa: N802
    portal_url: str, username: str | None = None, password: str | None = None
) -> dict[str, Any]:
    """Sign in to ``portal_url`` with a built-in account (over HTTP, ``generateToken``).

    Raises ``ValueError`` when the portal refuses (wrong password, Windows/SAML-only
    portal); the password never appears in the message.
    """
    if not portal_url or not username or not password:
        raise ValueError("SignInToPortal: portal_url, username and password are required")
    base = portal_url.rstrip("/")
    referer = base
    form = {
        "username": username,
        "password": password,
        "client": "referer",
        "referer": referer,
        "expiration": "60",
        "f": "json",
    }
    try:
        resp = httpx.post(f"{base}/sharing/rest/generateToken", data=form, timeout=30)
    except httpx.HTTPError as exc:
        raise ValueError(f"Unable to connect to the portal {base}: {type(exc).__name__}") from None
    if resp.status_code == 401:
        raise ValueError(
            f"Unable to sign in to {base}: the portal uses Windows or SAML (enterprise) "
            "logins; sign in through ArcGIS Pro instead"
        )
    try:
        body = resp.json()
    except ValueError:
        raise ValueError(f"Unable to sign in to {base}: HTTP {resp.status_code}") from None
    if "error" in body or not body.get("token"):
        err = body.get("error") or {}
        detail = "; ".join(err.get("details") or []) or err.get("message", "no token")
        raise ValueError(f"Unable to sign in to {base}: {detail}".replace(password, "***"))
    s = _state.session
    s.portal_url, s.token, s.referer, s.username = base + "/", body["token"], referer, username
    s.expires = int(float(body.get("expires", 0)) / 1000) or int(time.time() + 3600)
    return {"token": s.token, "referer": s.referer, "expires": s.expires}


def SignOutFromPortal() -> None:  # noqa: N802
    """Forget the active sign-in."""
    s = _state.session
    s.token = s.referer = s.username = None
    s.expires = 0


from . import mp, server, sharing  # noqa: E402 - arcpy exposes its modules as attributes

__all__ = [
    "AddError",
    "AddMessage",
    "AddWarning",
    "ExecuteError",
    "Filter",
    "GetActivePortalURL",
    "GetMessages",
    "GetSigninToken",
    "Parameter",
    "ResetProgressor",
    "SetProgressor",
    "SetProgressorLabel",
    "SetProgressorPosition",
    "SignInToPortal",
    "SignOutFromPortal",
    "mp",
    "server",
    "sharing",
]
