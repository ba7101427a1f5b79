"""A clean default Mapnik style for data given with ``tiledelta init --source``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

_PALETTE = ["#e5c494", "#a6cee3", "#b2df8a", "#fdbf6f", "#cab2d6", "#fb9a99", "#ffff99"]
_NAME_FIELDS = ("name", "label", "street", "st_name", "fullname", "full_name", "title")


def _name_field(fields: list[str]) -> str | None:
    lower = {f.lower(): f for f in fields}
    for cand in _NAME_FIELDS:
        if cand in lower:
            return lower[cand]
    for f in fields:
        if "name" in f.lower():
            return f
    return None


def default_style(sources: list[dict], srs: str = "epsg:3857") -> str:
    """A clean default Mapnik style for ``sources``.

    Each source is ``{"name", "path", "layer", "geometry_type", "fields"}``
    (see :func:`tiledelta.sources.describe`). Polygons get a fill and an
    outline, lines a stroke, points a dot; a name-like field gets labels.
    """
    root = ET.Element("Map", {"srs": srs, "background-color": "#f7f6f2"})
    layers = []
    for i, src in enumerate(sources):
        color = _PALETTE[i % len(_PALETTE)]
        gtype = (src.get("geometry_type") or "").lower()
        style = ET.SubElement(root, "Style", {"name": f"{src['name']}-style"})
        rule = ET.SubElement(style, "Rule")
        label_attrs = {
            "face-name": "DejaVu Sans Book",
            "size": "11",
            "fill": "#333333",
            "halo-fill": "#ffffff",
            "halo-radius": "1.5",
        }
        if "polygon" in gtype:
            ET.SubElement(rule, "PolygonSymbolizer", {"fill": color, "fill-opacity": "0.8"})
            ET.SubElement(rule, "LineSymbolizer", {"stroke": "#6b6b6b", "stroke-width": "0.6"})
            placement = "interior"
        elif "line" in gtype:
            ET.SubElement(rule, "LineSymbolizer", {"stroke": "#8a6d3b", "stroke-width": "1.5"})
            placement = "line"
        else:
            ET.SubElement(
                rule,
                "MarkersSymbolizer",
                {
                    "fill": "#d95f02",
                    "width": "6",
                    "height": "6",
                    "stroke": "#ffffff",
                    "allow-overlap": "true",
                },
            )
            placement = "point"
            label_attrs["dy"] = "-8"
        name_field = _name_field(list(src.get("fields") or []))
        if name_field:
            lrule = ET.SubElement(style, "Rule")
            ET.SubElement(lrule, "MaxScaleDenominator").text = "50000"
            text = ET.SubElement(lrule, "TextSymbolizer", {**label_attrs, "placement": placement})
            text.text = f"[{name_field}]"
        layers.append((src, style.get("name")))
    for src, style_name in layers:
        lyr = ET.SubElement(root, "Layer", {"name": src["name"], "srs": src.get("srs") or srs})
        ET.SubElement(lyr, "StyleName").text = style_name
        ds = ET.SubElement(lyr, "Datasource")
        ET.SubElement(ds, "Parameter", {"name": "type"}).text = "ogr"
        ET.SubElement(ds, "Parameter", {"name": "file"}).text = src["path"]
        ET.SubElement(ds, "Parameter", {"name": "layer"}).text = src["layer"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
