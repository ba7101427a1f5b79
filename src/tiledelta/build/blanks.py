"""Background-only tiles kept in the cache (``[cache] blank_tiles = "store"``)."""

from __future__ import annotations

from tiledelta.grid import BUNDLE_PACKET
from tiledelta.render import BlankFill
from tiledelta.stores import TileStore


def fill_blanks(store: TileStore, blank: BlankFill, levels: list[int]) -> int:
    """Store ``blank.data`` at every covered address of ``levels`` that holds no tile.

    Works band by band (128 rows, one bundle row), so each bundle is written once.
    """
    n = 0
    for level in levels:
        rng = blank.ranges.get(level)
        if rng is None:
            continue
        have = set(store.iter_tiles(level))
        r0, r1, c0, c1 = rng
        for band in range(r0 - r0 % BUNDLE_PACKET, r1 + 1, BUNDLE_PACKET):
            rows = range(max(band, r0), min(band + BUNDLE_PACKET - 1, r1) + 1)
            missing = [
                (level, r, c, blank.data)
                for r in rows
                for c in range(c0, c1 + 1)
                if (level, r, c) not in have
            ]
            if missing:
                store.put_many(missing)
                n += len(missing)
    return n
