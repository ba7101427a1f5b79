"""The layers of a Pro map: which draw, where their data is, what they draw with.

Group layers pass their visibility and scale range down to their children (a child draws
only where its group does). ArcGIS scale ranges: ``minScale`` is the smallest scale the
layer draws at, i.e. the LARGEST scale denominator ("out beyond"), ``maxScale`` the
smallest denominator ("in beyond"); 0 means no limit. Feature layers that draw become
:class:`FeatureLayer`; every other kind (raster, image and tile services, annotation,
dimension, ...) is listed as :class:`OtherLayer`, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from tiledelta.errors import StyleError
from tiledelta.style.cim.documents import MapDocument, as_bool, as_float, as_list
from tiledelta.style.cim.expressions import Fields, arcade_fields, label_fields, sql_fields
from tiledelta.style.cim.symbols import layer_buffer_px

_GROUPS = {"CIMGroupLayer", "CIMSubtypeGroupLayer"}
_FEATURE = {"CIMFeatureLayer", "CIMGeoFeatureLayerBase"}
_KIND_NAMES = {
    "CIMRasterLayer": "raster layer",
    "CIMMosaicLayer": "mosaic layer",
    "CIMImageServiceLayer": "image service layer",
    "CIMTiledServiceLayer": "tile service layer",
    "CIMVectorTileLayer": "vector tile layer",
    "CIMServiceLayer": "map service layer",
    "CIMWMSLayer": "WMS layer",
    "CIMWMTSLayer": "WMTS layer",
    "CIMAnnotationLayer": "annotation layer",
    "CIMDimensionLayer": "dimension layer",
    "CIMBuildingSceneLayer": "building scene layer",
    "CIMGALayer": "geostatistical layer",
    "CIMNetworkDatasetLayer": "network dataset layer",
    "CIMUtilityNetworkLayer": "utility network layer",
    "CIMStandaloneTable": "table",
}
#: Renderers whose fields tiledelta reads; any other means "every field".
KNOWN_RENDERERS = {"CIMSimpleRenderer", "CIMUniqueValueRenderer", "CIMClassBreaksRenderer"}
#: Workspace factories whose data GDAL reads here.
FILE_FACTORIES = {"FileGDB", "Shapefile", "SQLite", "GeoPackage"}


@dataclass(frozen=True)
class ScaleRange:
    """ArcGIS scale denominators a layer draws between (``largest`` may be infinite)."""

    smallest: float = 0.0  # CIM maxScale ("in beyond"); 0: none
    largest: float = float("inf")  # CIM minScale ("out beyond"); inf: none

    @classmethod
    def of(cls, obj: dict[str, Any], min_key: str, max_key: str) -> ScaleRange:
        lo = as_float(obj.get(max_key))
        hi = as_float(obj.get(min_key))
        return cls(max(lo, 0.0), hi if hi > 0 else float("inf"))

    def __and__(self, other: ScaleRange) -> ScaleRange:
        return ScaleRange(max(self.smallest, other.smallest), min(self.largest, other.largest))

    @property
    def empty(self) -> bool:
        return self.smallest > self.largest

    def as_list(self) -> list[float | None]:
        return [self.smallest, None if self.largest == float("inf") else self.largest]


@dataclass(frozen=True)
class DataSource:
    """A feature layer's data connection, as read from the map."""

    factory: str  # FileGDB | Shapefile | SQLite | GeoPackage | SDE | FeatureService | ...
    workspace: str  # the workspace's DATABASE (or URL) as written in the map
    dataset: str  # the feature class / table / shapefile name

    @property
    def readable(self) -> bool:
        return self.factory in FILE_FACTORIES

    def describe(self) -> str:
        if self.factory == "SDE":
            return f"an enterprise geodatabase (dataset {self.dataset})"
        if self.factory in ("FeatureService", "AGS", "ArcGISServer", "StreamService"):
            return f"a feature service (layer {self.dataset})"
        return f"a {self.factory} workspace (dataset {self.dataset})"


@dataclass
class FeatureLayer:
    """One feature layer that draws, with what decides its picture."""

    name: str
    cim: dict[str, Any]
    scales: ScaleRange
    source: DataSource | None
    definition: str | None  # the definition query (ArcGIS SQL), if any
    fields: Fields  # the fields the picture depends on; None: every field
    buffer_px: int
    labels: list[dict[str, Any]]  # label classes that draw
    geometry: str | None  # "point" | "line" | "polygon" (from the symbols), None: unknown
    digest: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def renderer(self) -> dict[str, Any]:
        r = self.cim.get("renderer")
        return r if isinstance(r, dict) else {}


@dataclass(frozen=True)
class OtherLayer:
    """A layer that is not used for change detection, and why."""

    name: str
    reason: str

    def line(self) -> str:
        return f"layer {self.name!r}: {self.reason}; not used for change detection"


@dataclass
class MapLayers:
    feature: list[FeatureLayer]  # top of the drawing first, as in Pro's Contents pane
    other: list[OtherLayer]
    cim_map: dict[str, Any]


def map_layers(doc: MapDocument, cim_map: dict[str, Any]) -> MapLayers:
    """Every layer of ``cim_map``, groups flattened, in the map's order (top first)."""
    out = MapLayers([], [], cim_map)
    ref_scale = as_float(cim_map.get("referenceScale"))
    where = f"map {cim_map.get('name')!r}"
    for uri in as_list(cim_map.get("layers")):
        obj = _layer_object(doc, uri, where)
        _visit(doc, obj, True, ScaleRange(), [], out, ref_scale)
    _unique_names(out.feature)
    return out


def _layer_object(doc: MapDocument, item: Any, where: str) -> dict[str, Any]:
    """A layer a map or group lists: a URI to resolve, or (some XML documents) the layer
    written inline."""
    if isinstance(item, dict):
        if str(item.get("type", "")).startswith("CIM"):
            return item
        inner = [v for v in item.values() if isinstance(v, dict) and "type" in v]
        if len(inner) == 1:
            return inner[0]
        raise StyleError(f"{doc.path}: {where} lists a layer tiledelta cannot read")
    return doc.resolve(str(item), where)


def _visit(
    doc: MapDocument,
    obj: dict[str, Any],
    visible: bool,
    scales: ScaleRange,
    path: list[str],
    out: MapLayers,
    ref_scale: float,
) -> None:
    name = str(obj.get("name") or "(unnamed)")
    kind = str(obj.get("type") or "")
    visible = visible and as_bool(obj.get("visibility"))
    scales = scales & ScaleRange.of(obj, "minScale", "maxScale")
    shown = "/".join([*path, name])
    if kind in _GROUPS:
        for uri in as_list(obj.get("layers")):
            child = _layer_object(doc, uri, f"group layer {shown!r}")
            _visit(doc, child, visible, scales, [*path, name], out, ref_scale)
        return
    if kind not in _FEATURE:
        what = _KIND_NAMES.get(kind, f"{kind.removeprefix('CIM') or 'unknown'} layer")
        out.other.append(OtherLayer(shown, what))
        return
    if not visible:
        out.other.append(OtherLayer(shown, "feature layer turned off in the map (not drawn)"))
        return
    if scales.empty:
        out.other.append(OtherLayer(shown, "feature layer whose scale range is empty (not drawn)"))
        return
    out.feature.append(_feature_layer(name, shown, obj, scales, ref_scale))


def _unique_names(layers: list[FeatureLayer]) -> None:
    """Layer names are tiledelta's keys: a repeated name is qualified by its group path,
    then numbered."""
    seen: dict[str, int] = {}
    for lyr in layers:
        seen[lyr.name] = seen.get(lyr.name, 0) + 1
    taken: set[str] = set()
    for lyr in layers:
        if seen[lyr.name] > 1:
            lyr.name = lyr.cim.get("_path") or lyr.name
        base, n = lyr.name, 2
        while lyr.name in taken:
            lyr.name = f"{base} ({n})"
            n += 1
        taken.add(lyr.name)


def _feature_layer(
    name: str, shown: str, obj: dict[str, Any], scales: ScaleRange, ref_scale: float
) -> FeatureLayer:
    obj = {**obj, "_path": shown}
    notes: list[str] = []
    ft = obj.get("featureTable") if isinstance(obj.get("featureTable"), dict) else {}
    assert isinstance(ft, dict)
    source = data_source(ft.get("dataConnection"), notes, shown)
    definition = definition_query(ft)
    renderer = obj.get("renderer") if isinstance(obj.get("renderer"), dict) else {}
    assert isinstance(renderer, dict)
    labels = []
    if as_bool(obj.get("labelVisibility")):
        labels = [
            lc
            for lc in as_list(obj.get("labelClasses"))
            if isinstance(lc, dict)
            and as_bool(lc.get("visibility"))
            and not (ScaleRange.of(lc, "minimumScale", "maximumScale") & scales).empty
        ]
    fields = _drawn_fields(renderer, labels, notes, shown)
    factor = 1.0
    if ref_scale > 0 and as_bool(obj.get("scaleSymbols"), default=False):
        if scales.smallest > 0:
            factor = ref_scale / scales.smallest
        else:
            notes.append(
                f"layer {shown!r}: the map has a reference scale and the layer no largest "
                "scale, so its buffer assumes symbols at their reference size"
            )
    buffer_px = layer_buffer_px(renderer, labels, factor)
    lyr = FeatureLayer(
        name=name,
        cim=obj,
        scales=scales,
        source=source,
        definition=definition,
        fields=fields,
        buffer_px=buffer_px,
        labels=labels,
        geometry=_geometry(renderer),
        notes=notes,
    )
    lyr.digest = layer_digest(lyr)
    return lyr


def _drawn_fields(
    renderer: dict[str, Any], labels: list[dict[str, Any]], notes: list[str], shown: str
) -> Fields:
    """Fields of the renderer (classes, visual variables, Arcade value expressions, symbol
    overrides) and of the label classes that draw (expressions and where clauses)."""
    names: set[str] = set()
    unknown: list[str] = []
    rtype = str(renderer.get("type") or "")
    if renderer and rtype not in KNOWN_RENDERERS:
        unknown.append(f"its renderer {rtype or '(untyped)'} is not one tiledelta reads")
    for key, value in _items(renderer):
        if key == "fields":
            names |= {str(v).rsplit(".", 1)[-1] for v in as_list(value) if str(v).strip()}
        elif (key == "field" or key.endswith("Field")) and isinstance(value, str) and value.strip():
            names.add(value.strip().rsplit(".", 1)[-1])
        elif key == "expression" and isinstance(value, str) and value.strip():
            got = arcade_fields(value)
            if got is None:
                unknown.append(f"an Arcade expression ({_short(value)})")
            else:
                names |= got
    for lc in labels:
        expr = str(lc.get("expression") or "")
        engine = str(lc.get("expressionEngine") or "VBScript")
        got = label_fields(expr, engine)
        if got is None:
            unknown.append(f"the label expression of class {lc.get('name')!r} ({_short(expr)})")
        else:
            names |= got
        where = str(lc.get("whereClause") or "").strip()
        if where:
            wf = sql_fields(where)
            if wf is None:
                unknown.append(f"the where clause of label class {lc.get('name')!r}")
            else:
                names |= wf
    if unknown:
        notes.append(
            f"layer {shown!r}: every field is fingerprinted, because tiledelta cannot tell "
            f"which fields {unknown[0]} reads"
        )
        return None
    return frozenset(names)


def _items(obj: Any):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _items(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _items(v)


def _short(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= 60 else one[:57] + "..."


def _geometry(renderer: dict[str, Any]) -> str | None:
    for _k, v in _items(renderer):
        if isinstance(v, dict):
            t = v.get("type")
            if t == "CIMPolygonSymbol":
                return "polygon"
            if t == "CIMLineSymbol":
                return "line"
            if t == "CIMPointSymbol":
                return "point"
    return None


def definition_query(ft: dict[str, Any]) -> str | None:
    """The definition query in force: ``definitionExpression``, else the active one of
    Pro 3.x's ``definitionFilterChoices``."""
    expr = str(ft.get("definitionExpression") or "").strip()
    if expr:
        return expr
    active = ft.get("definitionExpressionName")
    for choice in as_list(ft.get("definitionFilterChoices")):
        if isinstance(choice, dict) and (active is None or choice.get("name") == active):
            text = str(choice.get("definitionExpression") or "").strip()
            if text:
                return text
    return None


def _connection(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip().upper()] = v.strip()
    return out


def data_source(dc: Any, notes: list[str], shown: str) -> DataSource | None:
    """A layer's data connection; joins read their source table (and say so)."""
    if not isinstance(dc, dict):
        return None
    t = dc.get("type", "")
    if t == "CIMRelQueryTableDataConnection":
        notes.append(f"layer {shown!r}: a join; only its source table is read")
        return data_source(dc.get("sourceTable"), notes, shown)
    if t == "CIMSqlQueryDataConnection":  # a query layer: SQL on an enterprise database
        return DataSource("SDE", "", str(dc.get("dataset") or dc.get("queryName") or ""))
    if t not in ("CIMStandardDataConnection", "CIMFeatureDatasetDataConnection"):
        return DataSource(str(t).removeprefix("CIM") or "unknown", "", str(dc.get("dataset", "")))
    conn = _connection(str(dc.get("workspaceConnectionString") or ""))
    factory = str(dc.get("workspaceFactory") or "")
    workspace = conn.get("DATABASE") or conn.get("URL") or ""
    if not factory:
        low = workspace.lower()
        factory = "FileGDB" if low.endswith(".gdb") else "Shapefile"
        if low.endswith(".gpkg"):
            factory = "SQLite"
    enterprise = {"DBCLIENT", "INSTANCE", "SERVER"} & set(conn)
    if enterprise or workspace.lower().endswith(".sde"):
        factory = "SDE"
    return DataSource(factory, workspace, str(dc.get("dataset") or ""))


def workspace_path(workspace: str, base: Path) -> Path:
    """A workspace path from the map as a local path: backslashes and drive letters
    normalised, relative paths against the map's folder."""
    win = PureWindowsPath(workspace)
    if win.drive or workspace.startswith(("\\\\", "//")):  # C:\..., C:rel, \\server\share
        path = Path(workspace) if os.name == "nt" else Path(win.as_posix())
        return path if path.exists() else _moved(win, base) or path
    parts = [p for p in win.parts if p not in ("", ".")]
    return existing_path((base.joinpath(*parts)).resolve() if parts else base.resolve())


def _moved(win: PureWindowsPath, base: Path) -> Path | None:
    """An absolute path of the machine the map was saved on, found in the copy of its
    folder tree beside the map: ``K:\\webmaps\\Basemap\\Data\\County.gdb`` with the map in
    ``/copy/Basemap`` is ``/copy/Basemap/Data/County.gdb`` (the longest tail that exists,
    as Pro repairs a moved project's paths relative to it)."""
    parts = [p for p in win.parts[1:] if p not in ("", ".")]
    for i in range(len(parts)):
        found = existing_path(base.resolve().joinpath(*parts[i:]))
        if found.exists():
            return found
    return None


def existing_path(path: Path) -> Path:
    """``path``, or the existing path that differs from it only in letter case (Windows
    paths are case-insensitive, a Linux copy of the data is not); ``path`` when none."""
    if path.exists() or not path.is_absolute():
        return path
    current = Path(path.anchor)
    for part in path.parts[1:]:
        nxt = current / part
        if not nxt.exists():
            try:
                found = [c for c in current.iterdir() if c.name.lower() == part.lower()]
            except OSError:
                return path
            if len(found) != 1:
                return path
            nxt = found[0]
        current = nxt
    return current


def layer_digest(lyr: FeatureLayer) -> str:
    """sha256 of what decides the layer's picture besides its data: renderer, drawn label
    classes, scale range, buffer and fields, as canonical JSON."""
    doc = {
        "renderer": lyr.renderer,
        "labels": lyr.labels,
        "scales": lyr.scales.as_list(),
        "buffer": lyr.buffer_px,
        "fields": sorted(lyr.fields) if lyr.fields is not None else "*",
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def missing_source_error(lyr: FeatureLayer, what: str) -> StyleError:
    """The one line for a layer whose data cannot be read here, with the mapping advice."""
    return StyleError(
        f"layer {lyr.name!r}: {what}; point tiledelta at a readable copy in tiledelta.toml, "
        f'e.g. [layers."{lyr.name}"] source = "exports/data.gdb/{_dataset(lyr)}" '
        "(a FileGDB, GeoPackage or shapefile; or a PostGIS connection 'PG:...' with layer = TABLE)"
    )


def _dataset(lyr: FeatureLayer) -> str:
    ds = lyr.source.dataset if lyr.source else ""
    return ds.rsplit(".", 1)[-1] or "LAYER"
