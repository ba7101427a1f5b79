"""A Pro map as tiledelta's :class:`~tiledelta.style.Style`: one :class:`LayerSource` per
feature layer that draws (its data, definition query, drawn fields, buffer), Mapnik XML
carrying the scale ranges (and a preview of the symbols), and a digest per layer."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tiledelta.config import LayerConfig
from tiledelta.errors import StyleError
from tiledelta.style.cim.documents import MapDocument, as_float, open_document
from tiledelta.style.cim.expressions import SqlError, translate_where
from tiledelta.style.cim.layers import (
    FeatureLayer,
    MapLayers,
    ScaleRange,
    existing_path,
    map_layers,
    missing_source_error,
    workspace_path,
)
from tiledelta.style.cim.translate import ARCGIS_TO_MAPNIK, mapnik_xml
from tiledelta.style.mapnik_xml import LayerSource, Style

log = logging.getLogger(__name__)

#: Bumped when the translation of a map to Mapnik XML changes what a preview draws.
TRANSLATOR_VERSION = 1
#: Every field of the layer (an expression tiledelta cannot read): the sources read all.
ALL_FIELDS = ("*",)


@dataclass
class ProMap:
    """A Pro map as read: its layers and the document they came from."""

    document: MapDocument
    name: str
    layers: MapLayers


def read_pro_map(path: Path, map_name: str | None = None) -> ProMap:
    """Open ``path`` and pick its map (the only one, or ``map_name``)."""
    doc = open_document(path)
    cim_map = doc.find_map(map_name)
    return ProMap(doc, str(cim_map.get("name") or ""), map_layers(doc, cim_map))


def _dialect(path: str) -> str:
    return "sqlite" if path.lower().endswith((".gpkg", ".sqlite")) else "ogr"


def _mapped_source(lyr: FeatureLayer, cfg: LayerConfig, root: Path) -> tuple[str, str, str | None]:
    """(kind, path, layer) of a ``[layers."NAME"] source``."""
    src = str(cfg.source)
    if src.startswith("PG:"):
        if not cfg.layer:
            raise StyleError(
                f'[layers."{lyr.name}"]: a PostGIS source needs layer = "schema.table"'
            )
        return "postgis", src, cfg.layer
    p = Path(src).expanduser()
    p = p if p.is_absolute() else root / p
    if cfg.layer or p.exists():
        if not p.exists():
            raise _missing(lyr, str(p), mapped=True)
        return "ogr", str(p.resolve()), cfg.layer
    parent = p.parent
    if parent.exists() and parent.suffix.lower() in (".gdb", ".gpkg", ".sqlite"):
        return "ogr", str(parent.resolve()), p.name
    raise _missing(lyr, str(p), mapped=True)


def _as_written(lyr: FeatureLayer, path: str) -> str:
    ws = lyr.source.workspace if lyr.source else ""
    return path if not ws or ws == path else f"{path} (in the map: {ws})"


def _missing(lyr: FeatureLayer, path: str, *, mapped: bool = False) -> StyleError:
    if mapped:
        return StyleError(
            f'layer {lyr.name!r}: [layers."{lyr.name}"] source {path} does not exist; fix the '
            "path (relative to the project folder)"
        )
    return StyleError(
        f"layer {lyr.name!r}: its data {_as_written(lyr, path)} does not exist here; copy it "
        "there, or map the "
        f'layer in tiledelta.toml: [layers."{lyr.name}"] source = "path/to/copy.gdb/'
        f'{lyr.source.dataset if lyr.source else "LAYER"}"'
    )


def _own_source(lyr: FeatureLayer, base: Path) -> tuple[str, str, str | None]:
    """(kind, path, layer) of the layer's own data connection, checked to exist."""
    src = lyr.source
    if src is None:
        raise missing_source_error(lyr, "it has no data connection tiledelta can read")
    if not src.readable:
        what = f"its data is in {src.describe()}, which tiledelta cannot read"
        raise missing_source_error(lyr, what)
    folder = workspace_path(src.workspace, base)
    if src.factory == "Shapefile":
        name = src.dataset if src.dataset.lower().endswith(".shp") else f"{src.dataset}.shp"
        path = existing_path(folder / name)
        if not path.exists():
            raise _missing(lyr, str(path))
        return "shape", str(path), None
    if not folder.exists():
        raise _missing(lyr, str(folder))
    dataset = src.dataset
    if src.factory in ("SQLite", "GeoPackage") and dataset.lower().startswith("main."):
        dataset = dataset[5:]
    return "ogr", str(folder), dataset or None


def layer_source(lyr: FeatureLayer, base: Path, cfg: LayerConfig | None, root: Path) -> LayerSource:
    """The :class:`LayerSource` of one feature layer, with its definition query translated."""
    if cfg is not None and cfg.source:
        kind, path, layer = _mapped_source(lyr, cfg, root)
    else:
        kind, path, layer = _own_source(lyr, base)
    where = cfg.where if cfg is not None and cfg.where else None
    if where is None and lyr.definition:
        try:
            where = translate_where(lyr.definition, _dialect(path))
        except SqlError as exc:
            raise StyleError(
                f"layer {lyr.name!r}: its definition query cannot be applied ({exc}): "
                f"{lyr.definition!r}; simplify it in ArcGIS Pro, or give a GDAL where clause "
                f'in tiledelta.toml: [layers."{lyr.name}"] where = "..."'
            ) from None
    params = {"origin": "arcgis-pro"}
    if kind == "postgis" and where:
        raise StyleError(
            f"layer {lyr.name!r}: a definition query is not applied to a PostGIS source; "
            f'put it in the table: [layers."{lyr.name}"] layer = "(SELECT * FROM t WHERE ...) AS q"'
        )
    if kind == "postgis":
        params.update(_pg_params(path))
        params["table"] = layer or ""
    return LayerSource(
        name=lyr.name,
        kind=kind,
        path=path,
        layer=layer,
        srs=None,
        buffer_size=lyr.buffer_px,
        attributes=ALL_FIELDS if lyr.fields is None else tuple(sorted(lyr.fields)),
        params=params,
        where=where,
    )


def _pg_params(conn: str) -> dict[str, str]:
    out = {}
    for part in conn.removeprefix("PG:").split():
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = v.strip().strip("'")
    return out


def load_pro_map(
    path: Path,
    map_name: str | None = None,
    layers: dict[str, LayerConfig] | None = None,
    project_root: Path | None = None,
    scale_factor: float = ARCGIS_TO_MAPNIK,
) -> Style:
    """A Pro map (``.aprx``/``.mapx``/``.lyrx``) as a :class:`Style`; :class:`StyleError`
    (one line) for a damaged file, a missing map, data that is missing or cannot be read
    here without a mapping, or a definition query GDAL cannot apply. ``scale_factor`` is
    Mapnik's scale denominator per ArcGIS scale in the project's tiling scheme."""
    path = Path(path)
    pro = read_pro_map(path, map_name)
    base = path.resolve().parent
    root = project_root or base
    cfgs = layers or {}
    if not pro.layers.feature:
        raise StyleError(
            f"{path}: map {pro.name!r} has no feature layer that draws "
            f"({len(pro.layers.other)} other layer(s)); tiledelta needs one"
        )
    names = [lyr.name for lyr in pro.layers.feature]
    typo = sorted(n for n, c in cfgs.items() if (c.source or c.where) and n not in names)
    if typo:
        raise StyleError(
            f'[layers."{typo[0]}"] maps a layer that map {pro.name!r} does not draw; its '
            f"feature layers are {', '.join(map(repr, names))}"
        )
    sources, problems = [], []
    for lyr in pro.layers.feature:
        try:
            sources.append(layer_source(lyr, base, cfgs.get(lyr.name), root))
        except StyleError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise StyleError(problems[0])
    if problems:  # every layer named at once, so one edit of tiledelta.toml fixes them all
        raise StyleError(f"{len(problems)} layers cannot be used: " + " | ".join(problems))
    xml, preview_notes = mapnik_xml(pro.layers.feature, pro.layers.cim_map, scale_factor)
    notes = [o.line() for o in pro.layers.other]
    for lyr in pro.layers.feature:
        notes += lyr.notes
    notes += preview_notes
    cim_map = pro.layers.cim_map
    global_doc = {
        "translator": TRANSLATOR_VERSION,
        "map": pro.name,
        "background": cim_map.get("backgroundColor"),
        "referenceScale": as_float(cim_map.get("referenceScale")),
    }
    digest = hashlib.sha256(
        json.dumps(global_doc, sort_keys=True, default=str).encode()
    ).hexdigest()
    return Style(
        path=path.resolve(),
        xml_without_datasources=xml,
        layers=tuple(sources),
        fonts=("DejaVu Sans Book",),
        digest=digest,
        files=(),
        layer_digests={lyr.name: lyr.digest for lyr in pro.layers.feature},
        notes=tuple(notes),
    )


def _scale_text(rng: ScaleRange) -> str:
    out = "none" if rng.largest == float("inf") else f"1:{rng.largest:,.0f}"
    inn = "none" if rng.smallest <= 0 else f"1:{rng.smallest:,.0f}"
    return f"out beyond {out}, in beyond {inn}"


def layer_lines(pro: ProMap) -> list[str]:
    """One line per feature layer that draws: data, scale range, definition query, the
    fields fingerprinted, label classes (expression, engine, scales) and buffer."""
    lines = []
    for lyr in pro.layers.feature:
        src = lyr.source
        if src is None:
            data = "no data connection"
        elif src.readable:
            data = f"{src.factory} {src.workspace} / {src.dataset}"
        else:  # never the connection string: it can hold a password or a token
            data = (
                f"{src.describe()}, not readable here: map it in tiledelta.toml, "
                f'[layers."{lyr.name}"] source = "exports/data.gdb/'
                f'{src.dataset.rsplit(".", 1)[-1] or "LAYER"}"'
            )
        fields = "all (see the note)" if lyr.fields is None else ", ".join(sorted(lyr.fields))
        labels = "; ".join(
            f"{lc.get('name')!r}: {lc.get('expression')!s} "
            f"({lc.get('expressionEngine') or 'VBScript'}, "
            f"{_scale_text(ScaleRange.of(lc, 'minimumScale', 'maximumScale'))})"
            for lc in lyr.labels
        )
        lines.append(
            f"layer {lyr.name!r}: {data}; scale range {_scale_text(lyr.scales)}"
            + (f"; definition query {lyr.definition}" if lyr.definition else "")
            + f"; fields {fields or 'none'}; labels {labels or 'none'}; buffer {lyr.buffer_px} px"
        )
    return lines


def describe_map(pro: ProMap) -> dict:
    """What tiledelta reads from a Pro map, without opening its data: every feature layer
    (data connection, scale range, definition query, fields, label classes, buffer) and
    every other layer, as JSON-able data (``lines``: the same, one line per layer)."""
    layers = []
    for lyr in pro.layers.feature:
        src = lyr.source
        layers.append(
            {
                "name": lyr.name,
                "source": None
                if src is None
                else {
                    "factory": src.factory,
                    "dataset": src.dataset,
                    # never an enterprise connection string: it can hold a password
                    "workspace": src.workspace if src.readable else None,
                    "readable_here": src.readable,
                },
                "scale_range": {
                    "min_scale": None if lyr.scales.largest == float("inf") else lyr.scales.largest,
                    "max_scale": lyr.scales.smallest or None,
                },
                "definition_query": lyr.definition,
                "fields": None if lyr.fields is None else sorted(lyr.fields),
                "labels": [
                    {
                        "name": lc.get("name"),
                        "expression": lc.get("expression"),
                        "engine": lc.get("expressionEngine") or "VBScript",
                        "where": lc.get("whereClause") or None,
                        "min_scale": as_float(lc.get("minimumScale")) or None,
                        "max_scale": as_float(lc.get("maximumScale")) or None,
                    }
                    for lc in lyr.labels
                ],
                "buffer_px": lyr.buffer_px,
                "notes": lyr.notes,
            }
        )
    return {
        "path": str(pro.document.path),
        "map": pro.name,
        "maps": pro.document.map_names(),
        "generation": "Pro 2.x CIM XML" if pro.document.generation == "xml" else "CIM JSON",
        "layers": layers,
        "other": [{"name": o.name, "reason": o.reason} for o in pro.layers.other],
        "lines": layer_lines(pro)
        + [o.line() for o in pro.layers.other]
        + [n for lyr in pro.layers.feature for n in lyr.notes],
    }
