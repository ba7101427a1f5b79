"""``tiledelta serve``: a read-only tile server (XYZ, ArcGIS REST, WMTS) and the viewer."""
