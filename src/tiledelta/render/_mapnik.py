"""Import Mapnik without breaking GDAL.

The mapnik wheel points ``PROJ_LIB`` and ``GDAL_DATA`` at its own bundled copies
when imported. GDAL in rasterio/pyogrio, imported later in the same process,
would then read Mapnik's PROJ database and fail on EPSG codes ("Invalid Spatial
Reference"). Mapnik has configured itself by the end of its import, so the
previous values are put back.
"""

from __future__ import annotations

import os

from tiledelta.errors import RenderUnavailable

_saved = {k: os.environ.get(k) for k in ("PROJ_LIB", "GDAL_DATA")}

try:
    import mapnik
except ImportError as exc:  # the core runs without it (ArcGIS Pro on Windows)
    raise RenderUnavailable(
        f"local rendering needs Mapnik, which is not installed ({exc}); "
        'install it with: pip install "tiledelta[render]" (Linux and macOS)'
    ) from None

for _key, _value in _saved.items():
    if _value is None:
        os.environ.pop(_key, None)
    else:
        os.environ[_key] = _value

__all__ = ["mapnik"]
