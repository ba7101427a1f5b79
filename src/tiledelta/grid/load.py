"""Load the tiling scheme a project names: ``web-mercator`` or a file that holds one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from tiledelta.errors import CacheError, SchemeError
from tiledelta.grid.conf_xml import scheme_from_conf_xml
from tiledelta.grid.schemes import scheme_from_tile_info
from tiledelta.grid.tiles import TilingScheme, web_mercator

_SCHEME_SPEC_HELP = (
    "give 'web-mercator' or a path (relative to the project) to a conf.xml, "
    "root.json, .tpkx or MapServer ?f=json file"
)


def load_scheme(spec: str, base_dir: Path) -> TilingScheme:
    """The scheme named by ``spec``: ``"web-mercator"`` or a file path.

    A path (relative to ``base_dir``) may be an Esri ``conf.xml`` (or a cache
    folder holding one), a ``root.json``, a ``.tpkx`` tile package, or a
    ``.json`` MapServer / ``tileInfo`` document.
    """
    text = spec.strip()
    if text.lower().replace("_", "-") in ("web-mercator", "webmercator"):
        return web_mercator()
    if not text:
        raise SchemeError(f"empty tiling scheme: {_SCHEME_SPEC_HELP}")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if path.is_dir():
        for candidate in ("conf.xml", "root.json"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise SchemeError(f"folder {path} holds no conf.xml or root.json: {_SCHEME_SPEC_HELP}")
    if not path.is_file():
        raise SchemeError(f"tiling scheme file {path} not found: {_SCHEME_SPEC_HELP}")
    suffix = path.suffix.lower()
    if suffix == ".xml":
        try:
            return scheme_from_conf_xml(path)
        except CacheError as exc:  # a bad conf.xml is a bad scheme here
            raise SchemeError(str(exc)) from None
    if suffix == ".tpkx":
        doc = _read_tpkx_root(path)
        default_name = path.stem
    elif suffix == ".json":
        doc = _read_json(path, path.read_bytes())
        default_name = path.parent.name if path.stem == "root" else path.stem
    else:
        raise SchemeError(
            f"cannot read a tiling scheme from {path} (unknown file type): {_SCHEME_SPEC_HELP}"
        )
    name = doc.get("name") if isinstance(doc, dict) else None
    if not isinstance(name, str) or not name:
        name = default_name or "custom"
    try:
        return scheme_from_tile_info(doc, name=name)
    except SchemeError as exc:
        raise SchemeError(f"{path}: {exc}") from None


def _read_tpkx_root(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read("root.json")
    except zipfile.BadZipFile:
        raise SchemeError(f"{path} is not a tile package (not a zip file)") from None
    except KeyError:
        msg = f"{path} holds no root.json: is it a .tpkx (not an older .tpk)?"
        raise SchemeError(msg) from None
    return _read_json(path, raw)


def _read_json(path: Path, raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        msg = f"{path} is not UTF-8 JSON: give a MapServer ?f=json or root.json"
        raise SchemeError(msg) from None
    except json.JSONDecodeError as exc:
        raise SchemeError(
            f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
