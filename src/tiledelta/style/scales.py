"""At which levels a style layer can draw anything, decided as Mapnik decides it.

Read from the style XML, without Mapnik, so planning and the server-side update run
where Mapnik is not installed (ArcGIS Pro on Windows). Mapnik's rules (measured
with the mapnik 4 bindings, ``Layer.visible`` and ``Rule.active``):

- a layer is drawn at scale denominator ``sd`` when its ``status`` is on and
  ``minimum-scale-denominator - 1e-6 <= sd < maximum-scale-denominator + 1e-6``;
- a rule is active when ``MinScaleDenominator - 1e-6 <= sd < MaxScaleDenominator + 1e-6``
  and it has at least one symbolizer.

The 1e-6 is absolute, as in Mapnik, so a rule whose bound lies within it of a level's
scale is drawn at that level.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

#: Mapnik's slack on scale denominators (absolute).
SCALE_EPSILON = 1e-6
_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


@dataclass(frozen=True)
class ScaleRange:
    """A scale-denominator range as written in the style (``max`` may be infinite)."""

    min: float = 0.0
    max: float = float("inf")

    def contains(self, sd: float) -> bool:
        return sd >= self.min - SCALE_EPSILON and sd < self.max + SCALE_EPSILON


@dataclass(frozen=True)
class LayerScales:
    """A layer's own range, whether it is on, and the ranges of its drawing rules."""

    active: bool
    range: ScaleRange
    rules: tuple[ScaleRange, ...]

    def visible(self, sd: float) -> bool:
        return self.active and self.range.contains(sd) and any(r.contains(sd) for r in self.rules)


def _float(text: str | None, default: float) -> float:
    return float(text.strip()) if text and text.strip() else default


def layer_scales(xml: str) -> dict[str, LayerScales]:
    """Per layer name, what decides its visibility (from Mapnik XML text)."""
    root = ET.fromstring(xml)
    styles: dict[str, list[ScaleRange]] = {}
    for st in root.findall("Style"):
        ranges = []
        for rule in st.findall("Rule"):
            if not any(child.tag.endswith("Symbolizer") for child in rule):
                continue  # Mapnik never activates a rule without symbolizers
            ranges.append(
                ScaleRange(
                    _float(rule.findtext("MinScaleDenominator"), 0.0),
                    _float(rule.findtext("MaxScaleDenominator"), float("inf")),
                )
            )
        styles[st.get("name", "")] = ranges
    out: dict[str, LayerScales] = {}
    for lyr in root.findall("Layer"):
        status = (lyr.get("status") or "on").strip().lower()
        rules: list[ScaleRange] = []
        for sn in lyr.findall("StyleName"):
            rules += styles.get((sn.text or "").strip(), [])
        out[lyr.get("name", "")] = LayerScales(
            active=status not in _FALSE,
            range=ScaleRange(
                _float(lyr.get("minimum-scale-denominator"), 0.0),
                _float(lyr.get("maximum-scale-denominator"), float("inf")),
            ),
            rules=tuple(rules),
        )
    return out


def visible_levels(
    xml: str, levels: list[int], scale_denominator: Callable[[int], float]
) -> dict[str, list[int]]:
    """Per layer, the levels at which Mapnik can draw anything for it.

    ``scale_denominator(level)`` is the scale denominator Mapnik renders that level at
    (:func:`tiledelta.grid.mapnik_scale_denominator`).
    """
    sds = {lv: scale_denominator(lv) for lv in levels}
    return {
        name: [lv for lv in levels if scales.visible(sds[lv])]
        for name, scales in layer_scales(xml).items()
    }
