"""Open ArcGIS Pro documents without arcpy: ``.aprx`` (a zip of CIM documents), ``.mapx``
and ``.lyrx`` (CIM JSON).

An ``.aprx`` of Pro 2.x holds CIM XML (``GISProject.xml``, ``map/map.xml``, one document
per layer, PascalCase element names, ``xsi:type="typens:CIMFeatureLayer"``); Pro 3.x holds
the same documents as CIM JSON (``GISProject.json``, ``map/map.json``). In both, a map
lists its layers by URI (``CIMPATH=map/roads.json``) and a group layer its children the
same way. XML is turned into the JSON form (camelCase names, ``type``, arrays as lists),
so one reader handles both generations; XML scalars stay strings, which the readers
coerce (:func:`as_bool`, :func:`as_float`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tiledelta.errors import StyleError

_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
#: Geometry types whose Esri JSON names are lower case (``xmin``, ``x``), unlike the CIM's.
_LOWER_CASE_TYPES = {"EnvelopeN", "Envelope", "PointN", "Point"}
#: File suffixes of the Pro documents tiledelta reads.
MAP_SUFFIXES = (".aprx", ".mapx", ".lyrx")


@dataclass
class MapDocument:
    """The maps of one Pro document and the CIM objects their layer URIs name."""

    path: Path
    generation: str  # "xml" (Pro 2.x .aprx) or "json"
    maps: list[dict[str, Any]]
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # URI (lower) -> CIM

    def map_names(self) -> list[str]:
        return [str(m.get("name") or "") for m in self.maps]

    def find_map(self, name: str | None) -> dict[str, Any]:
        """The map called ``name``; without a name, the only map (else a list of them)."""
        names = self.map_names()
        if not self.maps:
            raise StyleError(f"{self.path}: the document holds no map")
        if name is None:
            if len(self.maps) > 1:
                raise StyleError(
                    f"{self.path}: the project has {len(names)} maps ({_quoted(names)}); "
                    "choose one with --map-name (map_name in tiledelta.toml)"
                )
            return self.maps[0]
        for m in self.maps:
            if m.get("name") == name:
                return m
        raise StyleError(
            f"{self.path}: no map named {name!r}; the maps are {_quoted(names)}; "
            "fix --map-name (map_name in tiledelta.toml)"
        )

    def resolve(self, uri: str, where: str) -> dict[str, Any]:
        """The CIM object a layer URI names; :class:`StyleError` naming ``where`` if absent."""
        doc = self.documents.get(_uri_key(uri))
        if doc is None:
            raise StyleError(
                f"{self.path}: {where} refers to {uri!r}, which is not in the document; "
                "the file is incomplete: save it again from ArcGIS Pro"
            )
        return doc


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _uri_key(uri: str) -> str:
    """A layer URI or archive member as a lookup key: ``CIMPATH=``, case and URL escapes
    dropped (Pro writes ``Map/x.xml`` in one place and ``map/x.xml`` in another, and may
    escape a space in a URI as ``%20`` while the member's name has the space)."""
    text = unquote(uri.strip()).replace("\\", "/")
    if text[:8].upper() == "CIMPATH=":
        text = text[8:]
    return text.lstrip("/").lower()


def open_document(path: Path) -> MapDocument:
    """Read an ``.aprx``, ``.mapx`` or ``.lyrx``; :class:`StyleError` (one line) when the
    file is missing, not the kind its suffix says, or damaged."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MAP_SUFFIXES:
        raise StyleError(
            f"{path}: not an ArcGIS Pro map; give an .aprx project, a .mapx map or a .lyrx "
            "layer file"
        )
    if not path.is_file():
        raise StyleError(f"{path}: map file not found")
    if suffix == ".aprx":
        return _open_aprx(path)
    doc = _json(path.read_bytes(), path, path.name)
    if suffix == ".mapx":
        return _from_map_document(path, doc)
    return _from_layer_document(path, doc)


def _json(raw: bytes, path: Path, member: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = path.name if member == path.name else f"{path.name}:{member}"
        raise StyleError(
            f"{path}: {where} is not valid CIM JSON ({exc}); save it again from ArcGIS Pro"
        ) from None
    if not isinstance(doc, dict):
        raise StyleError(f"{path}: {member} is not a CIM document (no JSON object)")
    return doc


def _from_map_document(path: Path, doc: dict[str, Any]) -> MapDocument:
    mdef = doc.get("mapDefinition")
    if doc.get("type") != "CIMMapDocument" or not isinstance(mdef, dict):
        raise StyleError(f"{path}: not a map file (.mapx): no CIMMapDocument with a mapDefinition")
    return MapDocument(path, "json", [mdef], _definitions(doc))


def _from_layer_document(path: Path, doc: dict[str, Any]) -> MapDocument:
    if doc.get("type") != "CIMLayerDocument":
        raise StyleError(f"{path}: not a layer file (.lyrx): no CIMLayerDocument")
    layers = [u for u in doc.get("layers") or [] if isinstance(u, str)]
    pseudo = {"type": "CIMMap", "name": path.stem, "layers": layers}
    return MapDocument(path, "json", [pseudo], _definitions(doc))


def _definitions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in doc.get("layerDefinitions") or []:
        if isinstance(d, dict) and d.get("uRI"):
            out[_uri_key(str(d["uRI"]))] = d
    return out


def _open_aprx(path: Path) -> MapDocument:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise StyleError(
            f"{path}: not an ArcGIS Pro project (an .aprx is a zip archive, this file is not "
            "one); give the .aprx Pro saved, or export the map as .mapx"
        ) from None
    except OSError as exc:
        raise StyleError(f"{path}: cannot read ({exc.strerror})") from None
    with zf:
        members = {}
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            if name.lower().endswith((".json", ".xml")):
                members[name] = info
        docs: dict[str, dict[str, Any]] = {}
        generation = "json"
        for name, info in members.items():
            try:
                raw = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
                raise StyleError(
                    f"{path}: the project archive is damaged ({name}: {exc}); restore it or "
                    "save it again from ArcGIS Pro"
                ) from None
            except NotImplementedError as exc:  # e.g. Deflate64, which zipfile cannot read
                raise StyleError(
                    f"{path}: {name} in the project archive is compressed in a way Python's "
                    f"zipfile cannot read ({exc}); save the project again from ArcGIS Pro, "
                    "or export the map as .mapx"
                ) from None
            if not _looks_cim(raw):
                continue
            if name.lower().endswith(".xml"):
                generation = "xml"
                doc = _xml_document(raw, path, name)
            else:
                doc = _json(raw, path, name)
            docs[_uri_key(f"CIMPATH={name}")] = doc
    maps = _project_maps(docs)
    if not maps:
        raise StyleError(
            f"{path}: the project holds no map (no CIMMap document in the archive); "
            "add a map in ArcGIS Pro and save the project"
        )
    return MapDocument(path, generation, maps, docs)


def _looks_cim(raw: bytes) -> bool:
    """Whether a member is a CIM document (UTF-8, with or without a BOM, or UTF-16): a CIM
    root element or type; item metadata (``Metadata/*.xml``) and the like are not."""
    head = raw[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head.decode("utf-16", errors="ignore").encode("utf-8")
    return b"<CIM" in head or b'"CIM' in head or b"typens:CIM" in head


def _project_maps(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The maps, in the order GISProject lists them (then any other CIMMap document)."""
    maps = {k: d for k, d in docs.items() if d.get("type") == "CIMMap"}
    ordered: list[dict[str, Any]] = []
    for doc in docs.values():
        if doc.get("type") != "CIMGISProject":
            continue
        for item in doc.get("projectItems") or []:
            if not isinstance(item, dict):
                continue
            key = _uri_key(str(item.get("catalogPath") or ""))
            if key in maps and maps[key] not in ordered:
                ordered.append(maps[key])
    ordered += [m for m in maps.values() if m not in ordered]
    return ordered


def _xml_document(raw: bytes, path: Path, member: str) -> dict[str, Any]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise StyleError(
            f"{path}: {member} in the project is not valid CIM XML ({exc}); save it again "
            "from ArcGIS Pro"
        ) from None
    value = xml_to_cim(root)
    if not isinstance(value, dict):
        return {}
    value.setdefault("type", _local(root.tag))
    return value


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def xml_to_cim(el: ET.Element) -> Any:
    """One CIM XML element as the CIM JSON form: objects as dicts with ``type``, arrays
    (``xsi:type="typens:ArrayOf..."``) as lists, scalars as their text."""
    xtype = el.get(_XSI_TYPE, "")
    local_type = xtype.rsplit(":", 1)[-1]
    children = list(el)
    if local_type.startswith("ArrayOf"):
        return [xml_to_cim(c) for c in children]
    if children or (local_type.startswith("CIM") and not xtype.startswith("xs:")):
        out: dict[str, Any] = {"type": local_type} if local_type else {}
        # Esri JSON writes envelopes and points in lower case (xmin, x), not camelCase
        name_of = str.lower if local_type in _LOWER_CASE_TYPES else _camel
        for c in children:
            key, value = name_of(_local(c.tag)), xml_to_cim(c)
            if key in out and key != "type":  # repeated elements without an ArrayOf: a list
                prev = out[key]
                out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[key] = value
        return out
    return (el.text or "").strip()


def as_bool(value: Any, default: bool = False) -> bool:
    """A CIM boolean: JSON true/false or XML "true"/"false"; absent is ``default``
    (CIM documents leave out properties at their default, which for booleans is false)."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def as_float(value: Any, default: float = 0.0) -> float:
    """A CIM number (JSON number or XML text); absent or unreadable is ``default``."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def as_list(value: Any) -> list[Any]:
    """A CIM array (absent is empty; one XML element may come as a scalar)."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]
