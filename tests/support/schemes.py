"""Small tiling schemes the planning tests share (pure grid math, no Mapnik)."""

from __future__ import annotations

from tiledelta.grid import LOD, Bounds, TilingScheme, web_mercator

#: A bounded scheme of three levels with round resolutions (1024 m meta-tiles at level 0).
SMALL = TilingScheme(
    name="small",
    crs="EPSG:3857",
    origin_x=1000.0,
    origin_y=9000.0,
    lods=(
        LOD(level=0, scale=3779.5, resolution=1.0),
        LOD(level=1, scale=1889.75, resolution=0.5),
        LOD(level=2, scale=1133.85, resolution=0.3),
    ),
    extent=Bounds(1000.0, 9000.0 - 2900.0, 1000.0 + 2500.0, 9000.0),
)
#: The same grid without an extent (rows and columns unbounded).
UNBOUNDED = SMALL.model_copy(update={"name": "unbounded", "extent": None})
WM = web_mercator(20)
