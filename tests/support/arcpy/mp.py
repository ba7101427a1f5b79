"""``arcpy.mp`` stand-in: open a real .aprx (a zip of CIM documents), list its maps,
make sharing drafts from a map, and write ArcGIS Server connection files (.ags)."""

from __future__ import annotations

import fnmatch
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import httpx

from . import _state


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _maps_in(zf: zipfile.ZipFile) -> list[tuple[str, list[str]]]:
    """(map name, layer names) of every map document in the archive (CIM JSON or XML)."""
    found: list[tuple[str, list[str]]] = []
    for info in zf.infolist():
        name = info.filename
        low = name.lower()
        if low.endswith(".json"):
            try:
                doc = json.loads(zf.read(name).decode("utf-8-sig"))
            except ValueError:
                raise OSError(f"{name} in the project is not valid JSON") from None
            if not isinstance(doc, dict):
                continue
            m = doc.get("mapDefinition") if doc.get("type") == "CIMMapDocument" else None
            m = m or (doc if doc.get("type") == "CIMMap" else None)
            if isinstance(m, dict) and m.get("name"):
                layers = [
                    ld.get("name", "")
                    for ld in doc.get("layerDefinitions") or []
                    if isinstance(ld, dict)
                ]
                found.append((str(m["name"]), layers))
        elif low.endswith(".xml"):
            try:
                root = ET.fromstring(zf.read(name))
            except ET.ParseError:
                raise OSError(f"{name} in the project is not well-formed XML") from None
            if _local(root.tag) == "CIMMapDocument":
                mdef = next((c for c in root if _local(c.tag) == "MapDefinition"), None)
                nm = next((c.text for c in mdef or [] if _local(c.tag) == "Name"), None)
                defs = next((c for c in root if _local(c.tag) == "LayerDefinitions"), None)
                layers = [
                    next((g.text or "" for g in ld if _local(g.tag) == "Name"), "")
                    for ld in defs or []
                ]
                if nm:
                    found.append((nm, layers))
            elif _local(root.tag) == "CIMMap":
                nm = next((c.text for c in root if _local(c.tag) == "Name"), None)
                if nm:
                    found.append((nm, []))
    return found


class Layer:
    """A layer of a map (name only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.longName = name

    def __repr__(self) -> str:
        return f"<Layer {self.name}>"


class Map:
    """A map of an :class:`ArcGISProject`."""

    mapType = "MAP"

    def __init__(self, project: ArcGISProject, name: str, layers: list[str]) -> None:
        self._project = project
        self.name = name
        self._layers = [Layer(n) for n in layers if n]

    def __repr__(self) -> str:
        return f"<Map {self.name}>"

    @property
    def project(self) -> ArcGISProject:
        return self._project

    def listLayers(self, wildcard: str | None = None) -> list[Layer]:  # noqa: N802
        return [lyr for lyr in self._layers if _match(lyr.name, wildcard)]

    def getWebLayerSharingDraft(  # noqa: N802
        self,
        server_type: str,
        service_type: str,
        service_name: str,
        layers_and_tables: list | None = None,
    ) -> Any:
        """A web layer sharing draft (``FEDERATED_SERVER`` + ``MAP_IMAGE`` here)."""
        from .sharing import MapImageSharingDraft, check_service_name

        if server_type not in ("HOSTING_SERVER", "FEDERATED_SERVER"):
            raise ValueError(f"server_type {server_type!r}: HOSTING_SERVER or FEDERATED_SERVER")
        valid = ("FEATURE", "TILE", "MAP_IMAGE", "VECTOR_TILE", "SCENE", "ELEVATION")
        if service_type not in valid:
            raise ValueError(f"service_type {service_type!r} is not one of {', '.join(valid)}")
        if (server_type, service_type) != ("FEDERATED_SERVER", "MAP_IMAGE"):
            raise NotImplementedError(
                f"the stand-in arcpy makes only FEDERATED_SERVER MAP_IMAGE drafts, "
                f"not {server_type} {service_type}"
            )
        check_service_name(service_name)
        return MapImageSharingDraft(self, service_name)


def _match(name: str, wildcard: str | None) -> bool:
    return not wildcard or fnmatch.fnmatch(name.lower(), wildcard.lower())


class ArcGISProject:
    """An ArcGIS Pro project: a path to an .aprx, or ``"CURRENT"`` inside Pro."""

    def __init__(self, aprx_path: str) -> None:
        if aprx_path == "CURRENT":
            current = _state.session.current_project
            if current is None:
                raise OSError("CURRENT")  # as arcpy outside an ArcGIS Pro session
            aprx_path = current
        path = Path(aprx_path)
        if path.suffix.lower() != ".aprx" or not path.is_file():
            raise OSError(str(aprx_path))
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise OSError(f"{aprx_path}: {bad} is damaged")
                self._maps = [Map(self, n, layers) for n, layers in _maps_in(zf)]
        except zipfile.BadZipFile:
            raise OSError(str(aprx_path)) from None
        self.filePath = str(path.resolve())
        self.homeFolder = str(path.resolve().parent)
        self.defaultGeodatabase = str(path.resolve().with_suffix(".gdb"))

    def listMaps(self, wildcard: str | None = None) -> list[Map]:  # noqa: N802
        return [m for m in self._maps if _match(m.name, wildcard)]

    def save(self) -> None:
        """Nothing to save: the stand-in never changes the project."""


# ------------------------------------------------------------------- server connection files

AGS_FORMAT = "tiledelta-standin-ags/1"


def CreateGISServerConnectionFile(  # noqa: N802
    connection_type: str,
    out_folder_path: str,
    out_name: str,
    server_url: str,
    server_type: str = "ARCGIS_SERVER",
    use_arcgis_desktop_staging_folder: bool = True,
    staging_folder_path: str | None = None,
    username: str | None = None,
    password: str | None = None,
    save_username_password: bool = True,
) -> str:
    """Write an ArcGIS Server connection file after checking the server and sign-in.

    The stand-in's ``.ags`` is JSON; Pro's is an encrypted binary (docs/arcpy-stand-in.md).
    """
    if connection_type not in (
        "ADMINISTER_GIS_SERVICES",
        "PUBLISH_GIS_SERVICES",
        "USE_GIS_SERVICES",
    ):
        raise ValueError(f"connection_type {connection_type!r} is not valid")
    if server_type != "ARCGIS_SERVER":
        raise ValueError("server_type must be ARCGIS_SERVER")
    url = server_url.rstrip("/")
    try:
        info = httpx.get(f"{url}/rest/info", params={"f": "json"}, timeout=30).json()
    except (httpx.HTTPError, ValueError):
        raise ValueError(f"{server_url} is not an ArcGIS Server site") from None
    if "currentVersion" not in info:
        raise ValueError(f"{server_url} is not an ArcGIS Server site")
    if username and password:
        body = httpx.post(
            f"{url}/tokens/generateToken",
            data={"username": username, "password": password, "client": "requestip", "f": "json"},
            timeout=30,
        ).json()
        if not body.get("token"):
            raise ValueError(f"Unable to connect to {server_url}: invalid username or password")
    out = Path(out_folder_path) / (out_name if out_name.endswith(".ags") else out_name + ".ags")
    doc = {
        "format": AGS_FORMAT,
        "url": url,
        "connection_type": connection_type,
        "username": username if save_username_password else None,
        "password": password if save_username_password else None,
    }
    out.write_text(json.dumps(doc), "utf-8")
    return str(out)


def read_ags(path: str) -> dict[str, Any]:
    """The stand-in's server connection file (raises like arcpy for a missing or foreign one)."""
    p = Path(path)
    if p.suffix.lower() != ".ags" or not p.is_file():
        raise ValueError(f"{path}: the server connection file does not exist")
    try:
        doc = json.loads(p.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path}: not a server connection file this stand-in can read") from None
    if not isinstance(doc, dict) or doc.get("format") != AGS_FORMAT:
        raise ValueError(f"{path}: not a server connection file this stand-in can read")
    return doc
