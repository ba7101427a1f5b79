"""A Pro map as Mapnik XML text: the scale ranges that decide which levels a layer draws
at, and a look-alike preview of its symbols (plain XML; Mapnik is not imported here).

What decides change detection is exact: each ``<Layer>`` carries the layer's scale range
(ArcGIS scales turned into Mapnik's scale denominators) and each label class is a rule
with its own range, so :func:`tiledelta.style.visible_levels` gives the levels ArcGIS
draws the layer at. The symbols are an approximation, for a local preview only:

- renderers: simple, unique value (filters on the value fields), class breaks;
- symbol layers: solid fill, solid stroke, vector and character markers (as a Mapnik
  ellipse of the marker's size and colours);
- text symbols with halo (DejaVu Sans, the font the mapnik wheel bundles).

Anything else (hatch, gradient or picture fills, picture markers, marker placements on
lines, Arcade value expressions) is named once per layer and left out of the preview.
"""

from __future__ import annotations

import colorsys
import xml.etree.ElementTree as ET
from typing import Any

from tiledelta.style.cim.documents import as_bool, as_float, as_list
from tiledelta.style.cim.expressions import label_fields
from tiledelta.style.cim.layers import FeatureLayer, ScaleRange
from tiledelta.style.cim.symbols import PX_PER_PT, symbol_enabled, text_symbol

#: Mapnik scale denominator per ArcGIS scale in a metre CRS: ArcGIS counts 96 dpi pixels
#: of 1/39.37 m per inch (its LOD scales: 591,657,527.59 at web-mercator level 0), Mapnik
#: 0.28 mm pixels, over the same map units per pixel. Other units (State Plane feet)
#: differ: the project passes its scheme's own ratio
#: (:func:`tiledelta.grid.mapnik_scale_denominator` over the LOD's ``scale``).
ARCGIS_TO_MAPNIK = 1 / (39.37 * 96 * 0.00028)
#: Relative slack so a level whose scale equals a bound is drawn (ArcGIS includes both).
_SLACK = 1e-9
#: The font of every preview label (bundled with the mapnik wheel).
PREVIEW_FONT = "DejaVu Sans Book"


def mapnik_denominators(
    scales: ScaleRange, factor: float = ARCGIS_TO_MAPNIK
) -> tuple[float, float]:
    """(min, max) Mapnik scale denominators of an ArcGIS scale range, both ends inclusive
    (``factor``: Mapnik's scale denominator per ArcGIS scale)."""
    lo = scales.smallest * factor * (1 - _SLACK)
    hi = scales.largest * factor * (1 + _SLACK)
    return lo, hi


def color(c: Any) -> tuple[str, float]:
    """A CIM colour as ``#rrggbb`` and opacity (0-1)."""
    if not isinstance(c, dict):
        return "#808080", 1.0
    vals = [as_float(v) for v in as_list(c.get("values"))]
    t = c.get("type", "")
    alpha = 100.0
    rgb = (128.0, 128.0, 128.0)
    if t == "CIMRGBColor" and len(vals) >= 3:
        rgb = (vals[0], vals[1], vals[2])
        alpha = vals[3] if len(vals) > 3 else 100.0
    elif t == "CIMGrayColor" and vals:
        rgb = (vals[0],) * 3
        alpha = vals[1] if len(vals) > 1 else 100.0
    elif t == "CIMCMYKColor" and len(vals) >= 4:
        cc, m, y, k = (v / 100 for v in vals[:4])
        rgb = tuple(255 * (1 - x) * (1 - k) for x in (cc, m, y))  # type: ignore[assignment]
        alpha = vals[4] if len(vals) > 4 else 100.0
    elif t == "CIMHSVColor" and len(vals) >= 3:
        r, g, b = colorsys.hsv_to_rgb(vals[0] / 360, vals[1] / 100, vals[2] / 100)
        rgb = (r * 255, g * 255, b * 255)
        alpha = vals[3] if len(vals) > 3 else 100.0
    r, g, b = (max(0, min(255, round(x))) for x in rgb)
    return f"#{r:02x}{g:02x}{b:02x}", max(0.0, min(1.0, alpha / 100))


def _px(pt: float) -> str:
    return f"{pt * PX_PER_PT:.3g}"


def _first_fill(sym: Any) -> dict[str, Any] | None:
    if isinstance(sym, dict):
        if sym.get("type") == "CIMSolidFill":
            return sym
        for v in sym.values():
            got = _first_fill(v)
            if got is not None:
                return got
    elif isinstance(sym, list):
        for v in sym:
            got = _first_fill(v)
            if got is not None:
                return got
    return None


def _first_stroke(sym: Any) -> dict[str, Any] | None:
    if isinstance(sym, dict):
        if sym.get("type") == "CIMSolidStroke":
            return sym
        for v in sym.values():
            got = _first_stroke(v)
            if got is not None:
                return got
    elif isinstance(sym, list):
        for v in sym:
            got = _first_stroke(v)
            if got is not None:
                return got
    return None


def symbolizers(rule: ET.Element, symbol: Any, unsupported: set[str]) -> None:
    """Append the Mapnik symbolizers of one CIM symbol (bottom symbol layer first)."""
    if isinstance(symbol, dict) and symbol.get("type") == "CIMSymbolReference":
        symbol = symbol.get("symbol")
    if not isinstance(symbol, dict):
        return
    stype = symbol.get("type", "")
    for lyr in reversed(as_list(symbol.get("symbolLayers"))):  # CIM lists the top one first
        if not isinstance(lyr, dict) or not symbol_enabled(lyr):
            continue
        t = lyr.get("type", "")
        if t == "CIMSolidFill" and stype != "CIMPointSymbol":
            fill, op = color(lyr.get("color"))
            ET.SubElement(rule, "PolygonSymbolizer", {"fill": fill, "fill-opacity": f"{op:.3g}"})
        elif t == "CIMSolidStroke" and stype != "CIMPointSymbol":
            stroke, op = color(lyr.get("color"))
            ET.SubElement(
                rule,
                "LineSymbolizer",
                {
                    "stroke": stroke,
                    "stroke-opacity": f"{op:.3g}",
                    "stroke-width": _px(as_float(lyr.get("width"), 1.0)),
                },
            )
        elif t in ("CIMVectorMarker", "CIMCharacterMarker") and stype == "CIMPointSymbol":
            size = _px(as_float(lyr.get("size"), 6.0))
            attrs = {"width": size, "height": size, "allow-overlap": "true"}
            mfill = _first_fill(lyr)
            if mfill is not None:
                attrs["fill"], op = color(mfill.get("color"))
                attrs["fill-opacity"] = f"{op:.3g}"
            mstroke = _first_stroke(lyr) if t == "CIMVectorMarker" else None
            if mstroke is not None:
                attrs["stroke"], _op = color(mstroke.get("color"))
                attrs["stroke-width"] = _px(as_float(mstroke.get("width"), 0.0))
            else:
                attrs["stroke-width"] = "0"
            ET.SubElement(rule, "MarkersSymbolizer", attrs)
        else:
            unsupported.add(t.removeprefix("CIM") or "an untyped symbol layer")


def _literal(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rules_for_renderer(style: ET.Element, lyr: FeatureLayer, unsupported: set[str]) -> None:
    r = lyr.renderer
    t = r.get("type", "")
    if t == "CIMUniqueValueRenderer" and not r.get("valueExpressionInfo"):
        fields = [str(f) for f in as_list(r.get("fields"))]
        for group in as_list(r.get("groups")):
            for cls in as_list(group.get("classes") if isinstance(group, dict) else None):
                if not isinstance(cls, dict) or not as_bool(cls.get("visible"), default=True):
                    continue
                alts = []
                for v in as_list(cls.get("values")):
                    vals = [str(x) for x in as_list(v.get("fieldValues"))] if v else []
                    if vals and len(vals) == len(fields):
                        pairs = zip(fields, vals, strict=True)
                        alts.append(" and ".join(f"([{f}] = {_literal(x)})" for f, x in pairs))
                if not alts:
                    continue
                rule = ET.SubElement(style, "Rule")
                ET.SubElement(rule, "Filter").text = " or ".join(f"({a})" for a in alts)
                symbolizers(rule, cls.get("symbol"), unsupported)
        if as_bool(r.get("useDefaultSymbol")) and r.get("defaultSymbol"):
            rule = ET.SubElement(style, "Rule")
            ET.SubElement(rule, "ElseFilter")
            symbolizers(rule, r.get("defaultSymbol"), unsupported)
    elif t == "CIMClassBreaksRenderer" and not r.get("valueExpressionInfo"):
        value = f"[{r.get('field')}]"
        if r.get("normalizationField"):
            value = f"({value} / [{r.get('normalizationField')}])"
        low = as_float(r.get("minimumBreak"), float("-inf"))
        first = True
        for brk in as_list(r.get("breaks")):
            if not isinstance(brk, dict):
                continue
            high = as_float(brk.get("upperBound"))
            rule = ET.SubElement(style, "Rule")
            cond = [f"{value} <= {high!r}"]
            if low != float("-inf"):
                cond.insert(0, f"{value} {'>=' if first else '>'} {low!r}")
            ET.SubElement(rule, "Filter").text = " and ".join(f"({c})" for c in cond)
            symbolizers(rule, brk.get("symbol"), unsupported)
            low, first = high, False
    elif t == "CIMSimpleRenderer":
        rule = ET.SubElement(style, "Rule")
        symbolizers(rule, r.get("symbol"), unsupported)
    else:
        unsupported.add(f"{t.removeprefix('CIM') or 'no'} renderer")
        sym = r.get("defaultSymbol") or r.get("symbol")
        if sym:
            rule = ET.SubElement(style, "Rule")
            symbolizers(rule, sym, unsupported)


def _text_expression(lc: dict[str, Any]) -> str:
    fields = label_fields(str(lc.get("expression") or ""), str(lc.get("expressionEngine") or ""))
    names = sorted(fields or ())
    if not names:
        return "''"
    return " + ' ' + ".join(f"[{n}]" for n in names)


def _label_rule(style: ET.Element, lyr: FeatureLayer, lc: dict[str, Any], factor: float) -> None:
    rng = ScaleRange.of(lc, "minimumScale", "maximumScale")
    lo, hi = mapnik_denominators(rng, factor)
    rule = ET.SubElement(style, "Rule")
    if lo > 0:
        ET.SubElement(rule, "MinScaleDenominator").text = repr(lo)
    if hi != float("inf"):
        ET.SubElement(rule, "MaxScaleDenominator").text = repr(hi)
    sym = text_symbol(lc)
    fill = _first_fill(sym.get("symbol")) if sym else None
    attrs = {
        "face-name": PREVIEW_FONT,
        "size": _px(as_float(sym.get("height"), 10.0)),
        "fill": color(fill.get("color"))[0] if fill else "#000000",
        "placement": {"line": "line", "polygon": "interior"}.get(lyr.geometry or "", "point"),
    }
    halo = sym.get("haloSymbol")
    if halo and as_float(sym.get("haloSize")) > 0:
        hf = _first_fill(halo)
        attrs["halo-fill"] = color(hf.get("color"))[0] if hf else "#ffffff"
        attrs["halo-radius"] = _px(as_float(sym.get("haloSize")))
    if lyr.geometry == "point":
        attrs["dy"] = f"-{_px(as_float(sym.get('height'), 10.0))}"
    ET.SubElement(rule, "TextSymbolizer", attrs).text = _text_expression(lc)


def mapnik_xml(
    layers: list[FeatureLayer], cim_map: dict[str, Any], factor: float = ARCGIS_TO_MAPNIK
) -> tuple[str, list[str]]:
    """The Mapnik XML of ``layers`` (given top first, drawn bottom first) and one note per
    layer whose symbols the preview leaves out; ``factor`` turns ArcGIS scales into
    Mapnik's scale denominators."""
    attrs = {"srs": "epsg:3857"}
    bg = cim_map.get("backgroundColor")
    if isinstance(bg, dict):
        attrs["background-color"], _op = color(bg)
    root = ET.Element("Map", attrs)
    notes = []
    ordered = list(reversed(layers))
    for i, lyr in enumerate(ordered):
        style = ET.SubElement(root, "Style", {"name": f"s{i}"})
        unsupported: set[str] = set()
        _rules_for_renderer(style, lyr, unsupported)
        for lc in lyr.labels:
            _label_rule(style, lyr, lc, factor)
        if not any(child.tag.endswith("Symbolizer") for r in style for child in r):
            # ArcGIS draws the layer at its scales: keep those levels visible (drawing nothing)
            ET.SubElement(ET.SubElement(style, "Rule"), "LineSymbolizer", {"stroke-opacity": "0"})
        if unsupported:
            notes.append(
                f"layer {lyr.name!r}: the preview leaves out {', '.join(sorted(unsupported))} "
                "(an approximation; ArcGIS draws them)"
            )
    for i, lyr in enumerate(ordered):
        lo, hi = mapnik_denominators(lyr.scales, factor)
        la = {"name": lyr.name, "status": "on", "buffer-size": str(lyr.buffer_px)}
        if lo > 0:
            la["minimum-scale-denominator"] = repr(lo)
        if hi != float("inf"):
            la["maximum-scale-denominator"] = repr(hi)
        el = ET.SubElement(root, "Layer", la)
        ET.SubElement(el, "StyleName").text = f"s{i}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode"), notes
