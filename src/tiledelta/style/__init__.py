"""The map style: a Mapnik XML file, parsed without Mapnik.

- :mod:`~tiledelta.style.mapnik_xml`: layers, their datasources, the attributes the style uses;
- :mod:`~tiledelta.style.scales`: at which scales each layer draws, as Mapnik decides it;
- :mod:`~tiledelta.style.default`: a default style for bare data sources;
- :mod:`~tiledelta.style.cim`: an ArcGIS Pro map (.aprx, .mapx, .lyrx) as the same model.

Loading a style into Mapnik (to validate it strictly, or to draw) is rendering's job:
:mod:`tiledelta.render`.
"""

from tiledelta.style.cim import load_pro_map
from tiledelta.style.default import default_style
from tiledelta.style.mapnik_xml import (
    RASTER_TYPES,
    VECTOR_TYPES,
    LayerSource,
    Style,
    load_style,
)
from tiledelta.style.scales import layer_scales, visible_levels

__all__ = [
    "RASTER_TYPES",
    "VECTOR_TYPES",
    "LayerSource",
    "Style",
    "default_style",
    "layer_scales",
    "load_pro_map",
    "load_style",
    "visible_levels",
]
