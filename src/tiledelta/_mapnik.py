"""Import Mapnik without breaking GDAL.

The mapnik wheel points ``PROJ_LIB`` and ``GDAL_DATA`` at its own bundled copies
when imported. GDAL in rasterio/pyogrio, imported later in the same process,
would then read Mapnik's PROJ database and fail on EPSG codes ("Invalid Spatial
Reference"). Mapnik has configured itself by the end of its import, so the
previous values are put back.
"""

from __future__ import annotations

import os

_saved = {k: os.environ.get(k) for k in ("PROJ_LIB", "GDAL_DATA")}

import mapnik  # noqa: E402

for _key, _value in _saved.items():
    if _value is None:
        os.environ.pop(_key, None)
    else:
        os.environ[_key] = _value

__all__ = ["mapnik"]
