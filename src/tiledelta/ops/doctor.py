"""``tiledelta doctor``: check a project's environment, one line per check.

Every check catches its own errors and turns them into a failed line that names the
file / field and what to do, so one broken thing never hides the others. Secrets
(the ArcGIS password, database passwords) are never printed: the credential check
says only whether they are there, and every line is scrubbed of known secrets.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import httpx
import pyogrio

from tiledelta.config import read_config
from tiledelta.grid import select_levels
from tiledelta.project import PROJECT_FILE, Project
from tiledelta.publish.arcgis.cache import tls_verify
from tiledelta.publish.arcgis.client import ArcGISError, is_local, load_credentials
from tiledelta.sources import display_path, list_layers, read_layer
from tiledelta.stores import open_project_store

SERVER_TIMEOUT = 5.0  # seconds for the ArcGIS Server reachability check
_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    level: str = "error"  # "error" | "warning": a failed warning does not fail the doctor

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.level == "error" else "warn")

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"

    def as_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


def exit_code(checks: list[Check]) -> int:
    """1 when any error-level check failed, else 0."""
    return int(any(not c.ok and c.level == "error" for c in checks))


def report(checks: list[Check]) -> dict:
    """The ``--json`` object."""
    return {"ok": exit_code(checks) == 0, "checks": [c.as_dict() for c in checks]}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Runner:
    """Collects checks; a check function's exception becomes its failed line."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.secrets: set[str] = set()

    def run(self, name: str, fn: Callable[[], Check | str], *, level: str = "error") -> bool:
        try:
            out = fn()
            check = out if isinstance(out, Check) else Check(name, True, out, level)
        except Exception as exc:  # every failure becomes one line, never a traceback
            check = Check(name, False, _one_line(exc), level)
        self.checks.append(check)
        return check.ok

    def scrubbed(self) -> list[Check]:
        out = []
        for c in self.checks:
            detail = _PASSWORD.sub(r"\1***", c.detail)
            for s in self.secrets:
                if len(s) >= 4:  # shorter ones would mangle the line; never printed anyway
                    detail = detail.replace(s, "***")
            out.append(Check(c.name, c.ok, detail, c.level))
        return out


class CheckFailed(Exception):
    """A check's own one-line verdict (the message is the whole line)."""


def run_checks(project_dir: Path | str) -> list[Check]:
    """Run every check that applies to the project in ``project_dir``."""
    root = Path(project_dir)
    r = _Runner()
    r.run("mapnik", _check_mapnik)
    holder: dict[str, Project] = {}

    def load() -> str:
        # The file alone: the scheme and levels get a check of their own below.
        if not (root / PROJECT_FILE).is_file():
            Project.load(root)  # says what to do: init, or pass --project
        holder["p"] = Project(root, read_config(root / PROJECT_FILE))
        return f"{holder['p'].root / PROJECT_FILE} is valid"

    if not r.run("project", load):
        return r.scrubbed()
    project = holder["p"]
    for lyr_pw in _style_passwords(project):
        r.secrets.add(lyr_pw)
    style_ok = r.run("style", lambda: _check_style(project))
    if style_ok or _style_parses(project):
        r.run("fonts", lambda: _check_fonts(project))
        for src in project.style.layers:
            r.run(f"datasource {src.name}", partial(_check_layer, project, src))
    scheme_ok = r.run("scheme", lambda: _check_scheme(project))
    if scheme_ok:
        r.run("cache", lambda: _check_cache(project))
    r.run("state", lambda: _check_state(project))
    if project.config.arcgis is not None:
        r.run("arcgis credentials", lambda: _check_credentials(project, r.secrets))
        r.run("arcgis server", lambda: _check_server(project))
    return r.scrubbed()


# --- the checks ----------------------------------------------------------------------------


def _check_mapnik() -> str:
    # Mapnik is optional (the server path runs without it): imported only to check it.
    from tiledelta.render.validate import mapnik_summary

    return mapnik_summary()


def _style_parses(project: Project) -> bool:
    try:
        project.style  # noqa: B018
    except Exception:
        return False
    return True


def _style_passwords(project: Project) -> list[str]:
    try:
        return [p for lyr in project.style.layers if (p := lyr.params.get("password"))]
    except Exception:
        return []


def _check_style(project: Project) -> str:
    # Mapnik is optional: imported only to check the style with it.
    from tiledelta.render.validate import validate_style

    style = project.style  # StyleError names the file and the reason
    validate_style(style)
    return f"{style.path}: {len(style.layers)} layer(s), loads in Mapnik"


def _known_faces(project: Project) -> set[str]:
    # Mapnik is optional: imported only to check the fonts it has.
    from tiledelta.render.validate import font_faces

    return font_faces(project.style)


def _check_fonts(project: Project) -> str:
    wanted = list(project.style.fonts)
    if not wanted:
        return "the style names no fonts"
    known = _known_faces(project)
    missing = [f for f in wanted if f not in known]
    if missing:
        sample = ", ".join(sorted(known)[:6]) + (" ..." if len(known) > 6 else "")
        raise CheckFailed(
            f"{project.style.path.name} asks for font(s) {', '.join(repr(f) for f in missing)} "
            f"that Mapnik does not have; install them or set font-directory on <Map> "
            f"(Mapnik has {len(known)} faces: {sample})"
        )
    return f"{len(wanted)} face(s) known to Mapnik: {', '.join(wanted)}"


def _check_layer(project: Project, src) -> str:
    if src.kind == "postgis":
        # Read it the way a build does (PostGIS goes through psycopg, not GDAL).
        try:
            data = read_layer(src, project.scheme.crs, project.key_field(src.name))
        except Exception as exc:
            raise CheckFailed(_one_line(exc)) from exc
        return f"{display_path(src)}: {len(data)} feature(s) read in key order"
    where = _short_path(project, Path(src.path))
    if not Path(src.path).exists():
        raise CheckFailed(
            f"{where} does not exist; fix the 'file' parameter of layer {src.name!r} in "
            f"{project.style.path.name}"
        )
    kw = {"layer": src.layer} if src.layer else {}
    try:
        info = pyogrio.read_info(src.path, **kw)
    except Exception as exc:
        hint = ""
        if src.layer:
            try:
                names = list_layers(src.path)
            except Exception:
                names = []
            if names and src.layer not in names:
                hint = f"; layers there: {', '.join(names)} (fix the 'layer' parameter)"
        raise CheckFailed(
            f"cannot read {where}"
            + (f" layer {src.layer!r}" if src.layer else "")
            + f" ({_one_line(exc)}){hint}"
        ) from exc
    fields = [str(f) for f in info["fields"]]
    missing = [a for a in src.attributes if a not in fields]
    if missing:
        raise CheckFailed(
            f"{where}: the style uses field(s) {', '.join(missing)} that the data does not have "
            f"(fields: {', '.join(fields) or 'none'}); fix the style or the data"
        )
    key = project.key_field(src.name)
    if key and key not in fields:
        raise CheckFailed(
            f"{where}: key field {key!r} is missing (fields: {', '.join(fields) or 'none'}); "
            f"fix [layers.{src.name}] key in {PROJECT_FILE}"
        )
    if not (info.get("crs") or src.srs):
        raise CheckFailed(
            f'{where} has no coordinate system; add a .prj or set srs="epsg:NNNN" on '
            f'<Layer name="{src.name}">'
        )
    used = f"; fields used: {', '.join(src.attributes)}" if src.attributes else ""
    layer = f" [{src.layer}]" if src.layer else ""
    return (
        f"{where}{layer}: {info['features']:,} {info['geometry_type']} feature(s), "
        f"{info.get('crs') or src.srs}{used}"
    )


def _short_path(project: Project, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project.root))
    except ValueError:
        return str(path)


def _check_scheme(project: Project) -> str:
    scheme = project.scheme
    levels = select_levels(scheme, project.config.levels)
    return (
        f"{project.config.scheme} ({scheme.crs}), levels {project.config.levels} "
        f"({len(levels)} level(s), 1:{scheme.lod(levels[0]).scale:,.0f} to "
        f"1:{scheme.lod(levels[-1]).scale:,.0f})"
    )


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder``, else the reason."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tiledelta-doctor-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def _check_cache(project: Project) -> str:
    c = project.config.cache
    path = project.cache_path
    where = _short_path(project, path)
    parent = path.parent
    if not path.exists():
        if not parent.is_dir():
            raise CheckFailed(f"{where}: the folder {parent} does not exist; create it")
        if why := _writable(parent):
            raise CheckFailed(f"{where}: cannot write in {parent} ({why}); fix its permissions")
        return f"{where} ({c.kind}): not built yet (run tiledelta seed); {parent} is writable"
    with open_project_store(project, create=False):  # CacheError: another scheme / kind
        pass
    # seed builds beside the cache and renames; updates write inside it
    for folder in [parent] + ([path] if path.is_dir() else []):
        if why := _writable(folder):
            raise CheckFailed(f"{where}: cannot write in {folder} ({why}); fix its permissions")
    if path.is_file() and not os.access(path, os.W_OK):
        raise CheckFailed(f"{where}: the file is read-only; fix its permissions")
    return f"{where} ({c.kind}, {c.format}): holds this scheme and is writable"


def _check_state(project: Project) -> str:
    folder = project.state_dir
    target = folder if folder.is_dir() else project.root
    if why := _writable(target):
        raise CheckFailed(
            f"cannot write in {target} ({why}); tiledelta keeps its snapshot and lock there"
        )
    return f"{folder.name}/ is writable"


def _check_credentials(project: Project, secrets: set[str]) -> str:
    env = project.root / ".env"
    in_env = bool(os.environ.get("ARCGIS_USERNAME") and os.environ.get("ARCGIS_PASSWORD"))
    _user, password = load_credentials(project.root)  # ArcGISError says what to set
    secrets.add(password.get())
    where = "the environment" if in_env else str(env)
    return f"ARCGIS_USERNAME and ARCGIS_PASSWORD are set (from {where}; values not shown)"


def _check_server(project: Project) -> Check | str:
    cfg = project.config.arcgis
    assert cfg is not None
    server = cfg.server.rstrip("/")
    url = f"{server}/rest/info?f=json"
    if server.startswith("http://") and not is_local(server):
        raise CheckFailed(f"{server}: plain http is only allowed for localhost; use https")
    try:
        verify = tls_verify(project)
    except ArcGISError as exc:
        raise CheckFailed(str(exc)) from exc
    try:
        resp = httpx.get(url, timeout=SERVER_TIMEOUT, verify=verify, follow_redirects=False)
    except httpx.HTTPError as exc:
        reason = _one_line(exc) or type(exc).__name__
        raise CheckFailed(
            f"cannot reach {url} ({reason}); check [arcgis] server, the network and the proxy"
        ) from exc
    try:
        info = resp.json()
    except ValueError:
        info = None
    if not isinstance(info, dict) or ("currentVersion" not in info and "error" not in info):
        raise CheckFailed(
            f"{url} answered HTTP {resp.status_code} but not like ArcGIS Server; "
            "[arcgis] server should be the site URL (e.g. https://host/server)"
        )
    if "error" in info:
        err = info["error"] or {}
        return Check(
            "arcgis server",
            False,
            f"{url} is reachable but answered error {err.get('code')}: {err.get('message')}",
            "warning",
        )
    return f"{server} reachable (ArcGIS Server {info['currentVersion']})"
