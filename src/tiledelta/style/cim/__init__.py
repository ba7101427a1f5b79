"""ArcGIS Pro maps read without arcpy: ``.aprx`` (Pro 2.x CIM XML or 3.x CIM JSON),
``.mapx`` and ``.lyrx``, as tiledelta's :class:`~tiledelta.style.Style` (docs/pro-maps.md).

- :mod:`~tiledelta.style.cim.documents`: open the document, XML turned into the JSON form;
- :mod:`~tiledelta.style.cim.layers`: layers that draw, groups, scales, data, fields;
- :mod:`~tiledelta.style.cim.expressions`: fields of Arcade/Python/VBScript/SQL, where clauses;
- :mod:`~tiledelta.style.cim.symbols`: how far symbols and labels reach (the buffer);
- :mod:`~tiledelta.style.cim.translate`: Mapnik XML (scale ranges, a look-alike preview);
- :mod:`~tiledelta.style.cim.load`: all of it as a :class:`~tiledelta.style.Style`.
"""

from tiledelta.style.cim.documents import MAP_SUFFIXES, MapDocument, open_document
from tiledelta.style.cim.layers import DataSource, FeatureLayer, OtherLayer, ScaleRange
from tiledelta.style.cim.load import (
    ALL_FIELDS,
    ProMap,
    describe_map,
    layer_lines,
    load_pro_map,
    read_pro_map,
)

__all__ = [
    "ALL_FIELDS",
    "MAP_SUFFIXES",
    "DataSource",
    "FeatureLayer",
    "MapDocument",
    "OtherLayer",
    "describe_map",
    "layer_lines",
    "ProMap",
    "ScaleRange",
    "load_pro_map",
    "open_document",
    "read_pro_map",
]
