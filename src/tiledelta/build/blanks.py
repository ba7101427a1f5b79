"""Background-only tiles kept in the cache (``[cache] blank_tiles``: "auto" or "store")."""

from __future__ import annotations

import time

from tiledelta.grid import BUNDLE_PACKET
from tiledelta.render import BlankFill, RunStats
from tiledelta.stores import TileStore


def fill_blanks(
    store: TileStore,
    blank: BlankFill,
    levels: list[int],
    stats: RunStats,
    *,
    track: bool = False,
) -> int:
    """Store ``blank.data`` at every covered address of ``levels`` that holds no tile.

    Works band by band (128 rows, one bundle row), so each bundle is written once. The
    tiles count as blank copies stored in ``stats`` (not as written: they were not
    rendered); with ``track`` (updates) their addresses join ``stats.changed``.
    """
    t0 = time.perf_counter()
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
                stats.count("blank_stored", level, len(missing))
                if track:
                    stats.changed.extend(t[:3] for t in missing)
    stats.write_seconds += time.perf_counter() - t0
    return n


def reconcile_blanks(
    store: TileStore, old: BlankFill, new: BlankFill, levels: list[int], stats: RunStats
) -> None:
    """After the area of kept blank tiles moved (the data's extent grew or shrank): store
    the blank tile where the ``new`` area lacks a tile, and remove the copies left outside
    it from the ``old`` one. Both hold the same tile; tiles with content are never touched."""
    for level in levels:
        if old.ranges.get(level) == new.ranges.get(level):
            continue
        stale = [a for a in store.iter_tiles(level) if old.covers(*a) and not new.covers(*a)]
        got = store.get_many(stale)
        gone = [(lv, r, c, None) for (lv, r, c), data in got.items() if data == old.data]
        if gone:
            store.put_many(gone)
            stats.count("removed", level, len(gone))
            stats.changed.extend(t[:3] for t in gone)
        fill_blanks(store, new, [level], stats, track=True)
