"""``tiledelta doctor``: check a project's environment, one line per check.

Every check catches its own errors and turns them into a failed line that names the
file / field and what to do, so one broken thing never hides the others. Secrets
(the ArcGIS password, database passwords) are never printed: the credential check
says only whether they are there, and every line is scrubbed of known secrets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pyogrio

from tiledelta.config import read_config
from tiledelta.grid import select_levels
from tiledelta.project import PROJECT_FILE, Project
from tiledelta.publish.arcgis.cache import tls_verify
from tiledelta.publish.arcgis.client import ArcGISError, is_local, load_sign_in
from tiledelta.sources import display_path, list_layers, read_layer
from tiledelta.stores import open_project_store
from tiledelta.stores.base import JPEG_MAGIC, PNG_MAGIC
from tiledelta.stores.compact import DATA_START, HEADER, OFFSET_MASK, parse_bundle_index

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
        """The ``--json`` form: a passing check has level ``ok``; a failed one its level
        (``error`` or ``warning``)."""
        return {**asdict(self), "level": "ok" if self.ok else self.level, "status": self.status}


def exit_code(checks: list[Check]) -> int:
    """1 when any error-level check failed, else 0."""
    return int(any(not c.ok and c.level == "error" for c in checks))


def report(checks: list[Check]) -> dict:
    """The ``--json`` object; when a check failed, also the ``error``, ``kind`` and ``hint``
    every command's ``--json`` error has (the first failed check)."""
    out: dict = {"ok": exit_code(checks) == 0, "checks": [c.as_dict() for c in checks]}
    failed = [c for c in checks if not c.ok and c.level == "error"]
    if failed:
        out["error"] = f"{failed[0].name}: {failed[0].detail}"
        out["kind"] = "doctor"
        out["hint"] = f"{len(failed)} check(s) failed; see checks" if len(failed) > 1 else None
        out["exit_code"] = exit_code(checks)
    return out


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
    # Without Mapnik (the core install) this is the one line naming the render extra;
    # the style is then only parsed, and the fonts are not checked.
    has_mapnik = r.run("mapnik", _check_mapnik)
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
    style_ok = r.run("style", lambda: _check_style(project, with_mapnik=has_mapnik))
    if style_ok or _style_parses(project):
        if has_mapnik:
            r.run("fonts", lambda: _check_fonts(project))
        for src in project.style.layers:
            r.run(f"datasource {src.name}", partial(_check_layer, project, src))
    scheme_ok = r.run("scheme", lambda: _check_scheme(project))
    cache_ok = scheme_ok and r.run("cache", lambda: _check_cache(project))
    if cache_ok and project.cache_path.exists() and project.config.cache.kind != "xyz":
        r.run("cache files", lambda: _check_cache_files(project))
    r.run("state", lambda: _check_state(project))
    for name, path, map_name in _pro_documents(project):
        r.run(name, partial(_check_pro_document, project, path, map_name))
    if _pro_documents(project):
        r.run("arcpy", _check_arcpy, level="warning")
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


def _check_style(project: Project, *, with_mapnik: bool = True) -> str:
    style = project.style  # StyleError names the file and the reason
    if not with_mapnik:
        return f"{style.path}: {len(style.layers)} layer(s), parsed (not loaded: no Mapnik)"
    # Mapnik is optional: imported only to check the style with it.
    from tiledelta.render.validate import validate_style

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


def _check_cache_files(project: Project) -> str:
    """Every bundle's header and index (compact), or SQLite's quick check (MBTiles)."""
    path = project.cache_path
    if project.config.cache.kind == "mbtiles":
        return _check_mbtiles_file(project, path)
    bundles = sorted(path.glob("_alllayers/L*/R*C*.bundle")) if path.is_dir() else []
    bad: list[str] = []
    tiles = 0
    for bundle in bundles:
        try:
            tiles += check_bundle(bundle)
        except CheckFailed as exc:
            bad.append(str(exc))
    if bad:
        more = f" ({len(bad) - 1} more bad bundle(s))" if len(bad) > 1 else ""
        raise CheckFailed(
            f"{bad[0]}{more}; rebuild the cache with 'tiledelta seed --project {project.root}'"
        )
    return f"{len(bundles):,} bundle(s), {tiles:,} tile record(s): headers and indexes valid"


def check_bundle(bundle: Path) -> int:
    """The number of tile records of a Compact Cache V2 bundle whose header, index and
    records are sound; :class:`CheckFailed` naming the bundle and what is wrong.

    Reads the 64-byte header, the 16384-record index and, per record, the 4-byte size
    Esri writes before each tile and the tile's first bytes (a PNG or JPEG signature).
    """
    name = f"{bundle.parent.name}/{bundle.name}"
    size = bundle.stat().st_size
    if size < DATA_START:
        raise CheckFailed(
            f"bundle {name} is truncated: {size:,} bytes, less than its header and index "
            f"({DATA_START:,} bytes)"
        )
    with bundle.open("rb") as fh:
        head = fh.read(DATA_START)
        version, _records, _max, _offset_bytes, _slack, file_size, *_rest = HEADER.unpack_from(head)
        if version != 3:
            raise CheckFailed(f"bundle {name}: header says version {version}, not 3 (V2 bundle)")
        if file_size > size:
            raise CheckFailed(
                f"bundle {name} is truncated: its header says {file_size:,} bytes, "
                f"the file has {size:,}"
            )
        index = parse_bundle_index(head, name)
        records = {int(r) for r in index[(index >> np.uint64(40)) > 0].tolist()}
        for rec in sorted(records):
            length, offset = rec >> 40, rec & OFFSET_MASK
            if offset < DATA_START + 4 or offset + length > size:
                raise CheckFailed(
                    f"bundle {name}: an index record points past the end of the file "
                    f"(offset {offset:,}, {length:,} bytes, file {size:,} bytes)"
                )
            fh.seek(offset - 4)
            got = fh.read(12)
            prefix = struct.unpack_from("<I", got)[0]
            if prefix != length or not got[4:].startswith((PNG_MAGIC[:8], JPEG_MAGIC[:3])):
                raise CheckFailed(
                    f"bundle {name}: the tile at offset {offset:,} is corrupt "
                    f"(size {prefix:,} where the index says {length:,}, or not PNG/JPEG)"
                )
    return int(np.count_nonzero(index >> np.uint64(40)))


def _check_mbtiles_file(project: Project, path: Path) -> str:
    where = _short_path(project, path)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = [row[0] for row in con.execute("PRAGMA quick_check")]
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise CheckFailed(f"{where}: not a readable SQLite file ({exc})") from exc
    if verdict != ["ok"]:
        raise CheckFailed(
            f"{where}: SQLite finds it corrupt ({'; '.join(verdict[:2])}); rebuild it with "
            f"'tiledelta seed --project {project.root}'"
        )
    return f"{where}: SQLite's quick check passes"


def _pro_documents(project: Project) -> list[tuple[str, Path, str | None]]:
    """The ArcGIS Pro documents the project uses: ``map`` (an .aprx, .mapx or .lyrx the
    style comes from) and ``[arcgis] aprx`` (publishing), with the map name asked for."""
    out = []
    cfg = project.config
    pro_map = getattr(cfg, "map", None)
    if pro_map:
        out.append(("map", project.root / pro_map, getattr(cfg, "map_name", None)))
    if cfg.arcgis is not None and cfg.arcgis.aprx:
        out.append(("arcgis aprx", project.root / cfg.arcgis.aprx, cfg.arcgis.map))
    return out


def _check_pro_document(project: Project, path: Path, map_name: str | None) -> str:
    where = _short_path(project, path)
    if not path.is_file():
        raise CheckFailed(f"{where} does not exist; fix the path in {PROJECT_FILE}")
    suffix = path.suffix.lower()
    if suffix == ".aprx":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckFailed(
                f"{where} is not an ArcGIS Pro project (.aprx is a ZIP archive: {exc}); "
                "save the project again in ArcGIS Pro"
            ) from exc
        if bad is not None:
            raise CheckFailed(f"{where}: member {bad} is corrupt; save the project again in Pro")
        maps = _aprx_maps(names)
        shown = f"map {map_name!r}" if map_name else "its maps"
        return f"{where}: ArcGIS Pro project, {len(maps)} map document(s); {shown} used"
    if suffix in (".mapx", ".lyrx"):
        try:
            json.loads(path.read_text(encoding="utf-8-sig"))
        except (ValueError, OSError) as exc:
            raise CheckFailed(f"{where} is not a valid {suffix} (JSON) file: {exc}") from exc
        return f"{where}: {suffix} document reads"
    raise CheckFailed(f"{where}: use an .aprx, .mapx or .lyrx file")


def _aprx_maps(names: list[str]) -> list[str]:
    return [n for n in names if n.lower().endswith((".xml", ".json")) and "map" in n.lower()]


def _check_arcpy() -> str:
    if importlib.util.find_spec("arcpy") is None:
        raise CheckFailed(
            "arcpy is not importable: run tiledelta from ArcGIS Pro's Python (the toolbox "
            "or 'propy') to read .aprx maps and publish with them"
        )
    import arcpy  # only where ArcGIS Pro is

    info = getattr(arcpy, "GetInstallInfo", None)
    version = (info() or {}).get("Version") if callable(info) else None
    return f"arcpy {version or '(version unknown)'} importable"


def _check_state(project: Project) -> str:
    folder = project.state_dir
    target = folder if folder.is_dir() else project.root
    if why := _writable(target):
        raise CheckFailed(
            f"cannot write in {target} ({why}); tiledelta keeps its snapshot and lock there"
        )
    return f"{folder.name}/ is writable"


def _check_credentials(project: Project, secrets: set[str]) -> str:
    """Whichever way a run will sign in: Pro's sign-in, a built-in account or app
    credentials (:func:`~tiledelta.publish.arcgis.client.load_sign_in`)."""
    cfg = project.config.arcgis
    sign_in = load_sign_in(project.root, cfg.portal if cfg else None)  # says what to set
    secrets.update(sign_in.secrets())
    if sign_in.kind != "password":
        return f"signs in with {sign_in.describe()} (values not shown)"
    env = project.root / ".env"
    in_env = bool(os.environ.get("ARCGIS_USERNAME") and os.environ.get("ARCGIS_PASSWORD"))
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
