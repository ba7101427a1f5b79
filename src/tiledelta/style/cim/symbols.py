"""How far from its geometry ArcGIS can draw a layer's symbols and labels (the buffer).

CIM sizes are points (1/72 inch); ArcGIS Server draws cache tiles at 96 dpi, so a size
of ``s`` points covers ``s * 96 / 72`` pixels. For every symbol a renderer can draw we
take the furthest reach of its symbol layers from the geometry:

- markers (vector, character, picture): half the size (a vector marker's frame can be
  wider than tall: its aspect ratio widens it), times sqrt(2) for any rotation, plus the
  marker's offsets and its outline;
- strokes: half the width; fills: nothing beyond the outline they fill;
- geometric effects: offsets, moves, buffers, radial lengths, arrow widths;
- the symbol's halo;
- size visual variables: their ``maxSize``.

Labels: the text symbol's height (a point label can sit above or beside its point, so the
whole height, not half), plus its halo, its x/y offsets and the placement's primary
offset. Labels also extend along their text; that length is not counted (we cannot know
the text), which is the assumption a long point label can break: see docs/pro-maps.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from tiledelta.style.cim.documents import as_bool, as_float, as_list

#: Pixels per point at the 96 dpi ArcGIS Server renders cache tiles at.
PX_PER_PT = 96 / 72

_MARKERS = {"CIMVectorMarker", "CIMCharacterMarker", "CIMPictureMarker"}
_STROKES = {"CIMSolidStroke", "CIMGradientStroke", "CIMPictureStroke"}
_SYMBOLS = {"CIMPointSymbol", "CIMLineSymbol", "CIMPolygonSymbol", "CIMMeshSymbol"}


def _walk(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _effects_reach(layer: dict[str, Any]) -> float:
    reach = 0.0
    for eff in as_list(layer.get("effects")):
        if not isinstance(eff, dict):
            continue
        t = eff.get("type", "")
        if t == "CIMGeometricEffectOffset":
            reach += abs(as_float(eff.get("offset")))
        elif t == "CIMGeometricEffectMove":
            reach += math.hypot(as_float(eff.get("offsetX")), as_float(eff.get("offsetY")))
        elif t == "CIMGeometricEffectBuffer":
            reach += abs(as_float(eff.get("size")))
        elif t == "CIMGeometricEffectRadial":
            reach += abs(as_float(eff.get("length")))
        elif t == "CIMGeometricEffectArrow":
            reach += abs(as_float(eff.get("width"))) / 2
        elif t in ("CIMGeometricEffectOffsetTangent", "CIMGeometricEffectOffsetHatch"):
            reach += abs(as_float(eff.get("offset")))
    return reach


def _marker_reach(m: dict[str, Any]) -> float:
    size = as_float(m.get("size"), 0.0)
    aspect = 1.0
    frame = m.get("frame")
    if isinstance(frame, dict):
        w = abs(as_float(frame.get("xmax")) - as_float(frame.get("xmin")))
        h = abs(as_float(frame.get("ymax")) - as_float(frame.get("ymin")))
        if w > 0 and h > 0:
            aspect = max(1.0, w / h)
    outline = 0.0
    for g in as_list(m.get("markerGraphics")):
        for d in _walk(g):
            if d.get("type") in _STROKES:
                outline = max(outline, as_float(d.get("width")))
    if m.get("type") == "CIMPictureMarker":
        w = as_float(m.get("width"), size)
        aspect = max(aspect, w / size) if size else aspect
    return (
        size / 2 * aspect * math.sqrt(2)
        + outline / 2
        + math.hypot(as_float(m.get("offsetX")), as_float(m.get("offsetY")))
    )


def symbol_reach_pt(symbol: dict[str, Any]) -> float:
    """How far (points) one CIM symbol can draw from its geometry."""
    reach = 0.0
    for lyr in as_list(symbol.get("symbolLayers")):
        if not isinstance(lyr, dict):
            continue
        t = lyr.get("type", "")
        if t in _MARKERS:
            r = _marker_reach(lyr)
        elif t in _STROKES:
            r = as_float(lyr.get("width")) / 2
        else:
            r = 0.0
        reach = max(reach, r + _effects_reach(lyr))
    return reach + max(0.0, as_float(symbol.get("haloSize")))


def renderer_reach_pt(renderer: dict[str, Any]) -> float:
    """The largest reach (points) of any symbol a renderer can draw, visual variables too."""
    reach = 0.0
    for d in _walk(renderer):
        t = d.get("type", "")
        if t in _SYMBOLS:
            reach = max(reach, symbol_reach_pt(d))
        elif t == "CIMSizeVisualVariable":
            reach = max(reach, as_float(d.get("maxSize")) / 2 * math.sqrt(2))
    return reach


def text_symbol(label_class: dict[str, Any]) -> dict[str, Any]:
    """The CIMTextSymbol of a label class (empty when it has none)."""
    ref = label_class.get("textSymbol")
    sym = ref.get("symbol") if isinstance(ref, dict) else None
    return sym if isinstance(sym, dict) else {}


def label_reach_pt(label_class: dict[str, Any]) -> float:
    """How far (points) a label class's text can reach from its feature, not counting the
    length of the text along its baseline."""
    sym = text_symbol(label_class)
    height = as_float(sym.get("height"), 10.0)
    halo = as_float(sym.get("haloSize")) if sym.get("haloSymbol") else 0.0
    offset = math.hypot(as_float(sym.get("offsetX")), as_float(sym.get("offsetY")))
    maplex = label_class.get("maplexLabelPlacementProperties")
    primary = 0.0
    if isinstance(maplex, dict) and maplex.get("primaryOffsetUnit", "Point") == "Point":
        primary = as_float(maplex.get("primaryOffset"))
    return height + halo + offset + primary


def layer_buffer_px(
    renderer: dict[str, Any], labels: list[dict[str, Any]], scale_factor: float = 1.0
) -> int:
    """The buffer (pixels at 96 dpi) of a layer: its symbols' and labels' furthest reach,
    rounded up, plus one pixel of antialiasing."""
    reach = renderer_reach_pt(renderer)
    for lc in labels:
        reach = max(reach, label_reach_pt(lc))
    return int(math.ceil(reach * PX_PER_PT * max(1.0, scale_factor))) + 1


def symbol_enabled(layer: dict[str, Any]) -> bool:
    """Whether a symbol layer draws (CIM ``enable``; absent is false)."""
    return as_bool(layer.get("enable"))
