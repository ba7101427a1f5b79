"""The map style: a Mapnik XML file whose layers name their datasources.

tiledelta reads the data itself (see :mod:`tiledelta.sources`) and hands Mapnik
in-memory datasources in a stable order, so this module splits a style into
what Mapnik draws (styles, symbolizers, layer settings) and where each layer's
data comes from (:class:`LayerSource`). It also finds the attributes the style
uses, so edits to other attributes never dirty a tile.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tiledelta.errors import StyleError

#: Datasource types whose features tiledelta reads through GDAL/OGR.
VECTOR_TYPES = {"shape", "ogr", "sqlite", "geojson", "postgis"}
#: Datasource types Mapnik reads itself (kept in the XML, paths made absolute); tiledelta
#: fingerprints their pixels block by block (:mod:`tiledelta.sources.raster`).
RASTER_TYPES = {"gdal", "raster"}
_FIELD_REF = re.compile(r"\[([^\[\]]+)\]")
_MAPNIK_VARS = {"mapnik::geometry_type", "mapnik::feature_id"}


@dataclass(frozen=True)
class LayerSource:
    """Where one style layer's features come from."""

    name: str
    kind: str  # shape | ogr | sqlite | geojson | postgis
    path: str  # file path (absolute) or a GDAL connection string
    layer: str | None = None  # layer / table inside the dataset
    srs: str | None = None  # the layer's declared srs, if any
    buffer_size: int | None = None  # layer-level buffer override (pixels)
    attributes: tuple[str, ...] = ()  # attributes the style uses for this layer
    params: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    where: str | None = None  # attribute filter applied when reading (a Pro definition query)
    #: raster layers: the RasterSymbolizer ``scaling`` methods of the layer's styles
    raster_scaling: tuple[str, ...] = ()


@dataclass(frozen=True)
class Style:
    """A parsed style: Mapnik XML without datasources, plus each layer's source."""

    path: Path
    xml_without_datasources: str
    layers: tuple[LayerSource, ...]
    fonts: tuple[str, ...]
    digest: str  # hash of the style file's bytes and of every file it refers to
    files: tuple[str, ...] = ()  # the files it refers to (symbols, patterns, font folders)
    #: per layer, a digest of what it draws with (a Pro map's renderer and labels): a change
    #: rebuilds that layer's levels only; empty (Mapnik XML): ``digest`` covers every layer
    layer_digests: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    #: what the reader wants said once (layers not used, fields it could not tell)
    notes: tuple[str, ...] = ()

    def layer(self, name: str) -> LayerSource:
        for lyr in self.layers:
            if lyr.name == name:
                return lyr
        raise StyleError(f"{self.path}: no layer named {name!r}")


def _params(ds: ET.Element) -> dict[str, str]:
    out = {}
    for p in ds.findall("Parameter"):
        if p.get("name"):
            out[p.get("name", "")] = (p.text or "").strip()
    return out


def _style_attributes(style: ET.Element) -> set[str]:
    """Attribute names referenced anywhere in a <Style> (filters, text, symbol fields)."""
    names: set[str] = set()
    for el in style.iter():
        texts = [el.text or ""] + list(el.attrib.values())
        for text in texts:
            for ref in _FIELD_REF.findall(text):
                if ref not in _MAPNIK_VARS and not ref.startswith("@"):
                    names.add(ref)
    return names


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_style(path: Path) -> Style:
    """Parse a Mapnik XML style; raise :class:`StyleError` with a one-line reason."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StyleError(f"{path}: cannot read the style ({exc.strerror})") from exc
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise StyleError(f"{path}: not valid XML ({exc})") from exc
    if root.tag != "Map":
        raise StyleError(f"{path}: not a Mapnik style (root element is <{root.tag}>, not <Map>)")
    base = path.parent
    if root.get("base"):
        base = Path(_resolve_path(root.get("base", ""), path.parent))

    styles = {s.get("name", ""): _style_attributes(s) for s in root.findall("Style")}
    fonts = sorted(
        {v for el in root.iter() for k, v in el.attrib.items() if k == "face-name"}
        | {f.get("face-name", "") for f in root.iter("Font") if f.get("face-name")}
    )
    layers: list[LayerSource] = []
    for lyr in root.findall("Layer"):
        name = lyr.get("name") or ""
        if not name:
            raise StyleError(f"{path}: a <Layer> has no name; give every layer a unique name")
        if any(x.name == name for x in layers):
            raise StyleError(f"{path}: layer name {name!r} is used twice; names must be unique")
        ds = lyr.find("Datasource")
        if ds is None:
            raise StyleError(f"{path}: layer {name!r} has no <Datasource>")
        params = _params(ds)
        if ds.get("base"):
            raise StyleError(
                f"{path}: layer {name!r}: named datasource templates are not supported"
            )
        kind = params.get("type", "")
        if kind not in VECTOR_TYPES | RASTER_TYPES:
            raise StyleError(
                f"{path}: layer {name!r} has datasource type {kind!r}; tiledelta supports "
                f"{', '.join(sorted(VECTOR_TYPES | RASTER_TYPES))}"
            )
        ds_base = Path(_resolve_path(params["base"], base)) if params.get("base") else base
        if kind in RASTER_TYPES:
            layers.append(_raster_layer(path, lyr, ds, params, ds_base, root))
            continue
        used: set[str] = set()
        for sn in lyr.findall("StyleName"):
            sname = (sn.text or "").strip()
            if sname not in styles:
                raise StyleError(
                    f"{path}: layer {name!r} names style {sname!r}, which is not defined"
                )
            used |= styles[sname]
        if lyr.get("group-by"):  # Mapnik orders the layer's drawing by this field
            used.add(lyr.get("group-by", "").strip())
        layer_name: str | None = None
        if kind == "postgis":
            conn = " ".join(
                f"{k}={params[k]}"
                for k in ("host", "port", "dbname", "user", "password")
                if params.get(k)
            )
            src_path = f"PG:{conn}"
            layer_name = params.get("table")
        else:
            file = params.get("file")
            if not file:
                raise StyleError(f"{path}: layer {name!r}: datasource has no 'file' parameter")
            # A GDAL connection string (an ogr datasource's 'PG:dbname=...') is no path.
            src_path = file if file.startswith("PG:") else _resolve_path(file, ds_base)
            if kind == "shape" and not src_path.lower().endswith(".shp"):
                src_path += ".shp"
            layer_name = params.get("layer") or params.get("table") or None
        buf = lyr.get("buffer-size")
        layers.append(
            LayerSource(
                name=name,
                kind=kind,
                path=src_path,
                layer=layer_name,
                srs=lyr.get("srs"),
                buffer_size=int(buf) if buf else None,
                attributes=tuple(sorted(used)),
                params=params,
            )
        )
        lyr.remove(ds)
    if not layers:
        raise StyleError(f"{path}: the style has no layers")
    files = referenced_files(root, base)
    xml = ET.tostring(root, encoding="unicode")
    return Style(
        path=path.resolve(),
        xml_without_datasources=xml,
        layers=tuple(layers),
        fonts=tuple(fonts),
        digest=_digest(raw, files),
        files=tuple(str(f) for f in files),
    )


def _raster_layer(
    path: Path, lyr: ET.Element, ds: ET.Element, params: dict[str, str], base: Path, root
) -> LayerSource:
    """A ``gdal``/``raster`` layer: its datasource stays in the XML (Mapnik reads the file
    itself), with the file made absolute so any process can open it."""
    name = lyr.get("name") or ""
    file = params.get("file")
    if not file:
        raise StyleError(f"{path}: layer {name!r}: datasource has no 'file' parameter")
    src_path = _resolve_path(file, base)
    for p in ds.findall("Parameter"):
        if p.get("name") == "file":
            p.text = src_path
        elif p.get("name") == "base":
            ds.remove(p)
    params = {k: v for k, v in params.items() if k != "base"} | {"file": src_path}
    names = {(sn.text or "").strip() for sn in lyr.findall("StyleName")}
    scaling = sorted(
        {
            (sym.get("scaling") or "near").strip()
            for st in root.findall("Style")
            if st.get("name", "") in names
            for sym in st.iter("RasterSymbolizer")
        }
    )
    buf = lyr.get("buffer-size")
    return LayerSource(
        name=name,
        kind=params.get("type", ""),
        path=src_path,
        srs=lyr.get("srs"),
        buffer_size=int(buf) if buf else None,
        params=params,
        raster_scaling=tuple(scaling),
    )


#: Attributes whose value names a file Mapnik loads to draw (markers, patterns, shields…).
_FILE_ATTRS = ("file", "background-image")


def referenced_files(root: ET.Element, base: Path) -> list[Path]:
    """Every file the style loads besides its data: symbol and pattern images, and the
    files in its ``font-directory``. A file name holding an expression (``[field]``)
    stands for every file its pattern matches. Datasource parameters are data, not style,
    and are left out."""
    out: set[Path] = set()
    for el in root.iter():
        if el.tag in ("Datasource", "Parameter"):
            continue
        for key in _FILE_ATTRS:
            value = (el.get(key) or "").strip()
            if value:
                out.update(_matching(value, base))
    font_dir = (root.get("font-directory") or "").strip()
    if font_dir:
        folder = Path(_resolve_path(font_dir, base))
        if folder.is_dir():
            out.update(p for p in folder.rglob("*") if p.is_file())
        else:
            out.add(folder)
    return sorted(out)


def _matching(value: str, base: Path) -> list[Path]:
    if "[" not in value:
        return [Path(_resolve_path(value, base))]
    pattern = _FIELD_REF.sub("*", value)
    path = Path(pattern)
    folder = path.parent if path.is_absolute() else base / path.parent
    return sorted(folder.glob(path.name)) if folder.is_dir() else [folder / path.name]


def _digest(raw: bytes, files: list[Path]) -> str:
    """sha256 of the style's bytes and of each referenced file (name and bytes)."""
    h = hashlib.sha256(raw)
    for f in files:
        h.update(b"\0" + str(f).encode())
        try:
            h.update(b"\1" + hashlib.sha256(f.read_bytes()).digest())
        except OSError:
            h.update(b"\2missing")
    return h.hexdigest()
