"""tiledelta: keep raster tile caches fresh by re-rendering only what changed."""

__version__ = "0.1.0"
