"""Supertiles: the blocks ArcGIS Server draws when it rebuilds part of a cache.

Esri's *Manage Tile Cache* documentation says the caching tools draw the map in large
images called supertiles, 2,048 × 2,048 pixels when the map is drawn with antialiasing
and 4,096 × 4,096 without, then cut them into tiles; an area of interest that meets a
supertile makes the whole supertile drawn. tiledelta assumes the same of *Manage Map
Server Cache Tiles* and that supertiles are aligned on the tiling scheme's origin, so a
supertile is ``n`` × ``n`` tiles with ``n = supertile_px / tile size`` (8 for 256-pixel
tiles with antialiasing, 16 without). ``docs/arcgis.md`` lists what is known and what is
assumed.

Pure functions, no I/O.
"""

from __future__ import annotations

import numpy as np

from tiledelta.grid.tiles import Bounds, TilingScheme, grid_size, is_web_mercator, web_mercator

#: Supertile edge in pixels when the service draws with antialiasing (Esri's documentation).
SUPERTILE_PX_ANTIALIASED = 2048
#: Supertile edge in pixels without antialiasing.
SUPERTILE_PX_PLAIN = 4096
#: Esri's ``AntialiasingMode`` values (a MapServer's ``documentInfo``); only "None" is off.
ANTIALIASING_MODES = ("None", "Fastest", "Fast", "Normal", "Best")


def supertile_px(antialiasing: bool) -> int:
    """The supertile edge in pixels for a service drawn with or without antialiasing."""
    return SUPERTILE_PX_ANTIALIASED if antialiasing else SUPERTILE_PX_PLAIN


def service_antialiasing(info: dict) -> bool | None:
    """Whether a MapServer draws with antialiasing, from its JSON (``documentInfo``).

    ``AntialiasingMode`` "None" is off, any other of Esri's modes is on; None when the
    document does not say (older servers, or a field tiledelta does not know).
    """
    doc = info.get("documentInfo")
    mode = doc.get("AntialiasingMode") if isinstance(doc, dict) else None
    if not isinstance(mode, str):
        return None
    for known in ANTIALIASING_MODES:
        if mode.strip().lower() == known.lower():
            return known != "None"
    return None


def drawing_grid(scheme: TilingScheme) -> TilingScheme:
    """The grid the server cuts supertiles from: the world for Web Mercator, else
    unbounded from the origin.

    A scheme read from a service carries the service's full extent; the server's
    supertiles are not clipped to it (tiledelta assumes), only to the tiling grid.
    """
    extent = web_mercator().extent if is_web_mercator(scheme) else None
    return scheme.model_copy(update={"extent": extent})


def supertile_span(scheme: TilingScheme, px: int) -> tuple[int, int]:
    """(rows, cols) of tiles in one supertile of ``px`` pixels (at least 1 each way)."""
    return max(1, px // scheme.tile_height), max(1, px // scheme.tile_width)


def supertiles_of_tiles(tiles: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Unique, sorted (srow, scol) of the supertiles holding the (row, col) ``tiles``."""
    t = np.asarray(tiles, dtype=np.int64).reshape(-1, 2)
    if not len(t):
        return np.zeros((0, 2), dtype=np.int64)
    st = np.column_stack([t[:, 0] // span[0], t[:, 1] // span[1]])
    return np.unique(st, axis=0).reshape(-1, 2)


def supertile_tile_range(
    scheme: TilingScheme, level: int, srow: int, scol: int, span: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Inclusive (row0, row1, col0, col1) of the supertile's tiles inside the grid."""
    r0, c0 = srow * span[0], scol * span[1]
    r1, c1 = r0 + span[0] - 1, c0 + span[1] - 1
    size = grid_size(scheme, level)
    if size is not None:
        r1, c1 = min(r1, size[0] - 1), min(c1, size[1] - 1)
    return r0, r1, c0, c1


def supertile_tile_count(
    scheme: TilingScheme, level: int, supertiles: np.ndarray, span: tuple[int, int]
) -> int:
    """How many tiles of the grid the ``supertiles`` of ``level`` hold."""
    total = 0
    for srow, scol in np.asarray(supertiles, dtype=np.int64).reshape(-1, 2).tolist():
        r0, r1, c0, c1 = supertile_tile_range(scheme, level, srow, scol, span)
        total += max(0, r1 - r0 + 1) * max(0, c1 - c0 + 1)
    return total


def supertile_bounds(
    scheme: TilingScheme, level: int, srow: int, scol: int, span: tuple[int, int]
) -> Bounds:
    """The extent of the supertile's tiles that lie inside the grid (map units)."""
    r0, r1, c0, c1 = supertile_tile_range(scheme, level, srow, scol, span)
    return tiles_rect_bounds(scheme, level, r0, r1, c0, c1)


def tiles_rect_bounds(
    scheme: TilingScheme, level: int, r0: int, r1: int, c0: int, c1: int
) -> Bounds:
    """The extent of the inclusive block of tiles rows ``r0..r1``, columns ``c0..c1``."""
    res = scheme.resolution(level)
    w, h = scheme.tile_width * res, scheme.tile_height * res
    return Bounds(
        scheme.origin_x + c0 * w,
        scheme.origin_y - (r1 + 1) * h,
        scheme.origin_x + (c1 + 1) * w,
        scheme.origin_y - r0 * h,
    )
