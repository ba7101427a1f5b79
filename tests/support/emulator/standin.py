"""Stand-in tiles for the emulator's cache jobs where Mapnik is not installed.

``.ci/run``'s second venv has no Mapnik, yet its server-path tests run cache jobs. There
the emulator cannot draw the map, so each tile it redraws gets a flat PNG whose colour is
a digest of the features (their fingerprints, in draw order) whose box meets the tile
grown by the buffer; a tile no feature meets is blank (not stored), as a drawn one would
be. An edit therefore changes exactly the tiles it can reach, which is what those tests
check: which tiles a job redraws and writes, not what they look like (docs/emulator.md).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from tiledelta.grid import TilingScheme, query_pad, tile_bounds
from tiledelta.sources import LayerData


class StandInRenderer:
    """Draws stand-in tiles with the interface of tiledelta's ``Renderer.tiles``."""

    def __init__(self, scheme: TilingScheme, layers: dict[str, LayerData], buffer_px: int) -> None:
        self.scheme, self.layers, self.buffer_px = scheme, layers, buffer_px

    def tiles(
        self, level: int, mrow: int, mcol: int, wanted: set[tuple[int, int]] | None = None
    ) -> list[tuple[int, int, int, bytes | None]]:
        """The wanted tiles of the meta-tile's tiles (``wanted`` is required here)."""
        pad = query_pad(self.scheme, level, self.buffer_px)
        out = []
        for row, col in sorted(wanted or ()):
            b = tile_bounds(self.scheme, level, row, col)
            digest = hashlib.sha256()
            for name, data in self.layers.items():
                bx = data.bounds
                if not len(bx):
                    continue
                hit = (
                    (bx[:, 0] <= b.xmax + pad)
                    & (bx[:, 2] >= b.xmin - pad)
                    & (bx[:, 1] <= b.ymax + pad)
                    & (bx[:, 3] >= b.ymin - pad)
                )
                if hit.any():
                    digest.update(name.encode())
                    digest.update(np.ascontiguousarray(data.fingerprints[hit]).tobytes())
            if digest.digest() == hashlib.sha256().digest():
                out.append((level, row, col, None))
                continue
            rgb = tuple(digest.digest()[:3])
            buf = io.BytesIO()
            Image.new("RGB", (self.scheme.tile_width, self.scheme.tile_height), rgb).save(
                buf, "PNG"
            )
            out.append((level, row, col, buf.getvalue()))
        return out
