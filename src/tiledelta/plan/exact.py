"""The exact dirty set: a meta-tile is re-rendered only when what it draws changed.

Mapnik draws a meta-tile from the features whose box meets its buffered extent, in the
layer's order. Its picture is therefore a function of, per visible layer, the ordered
list of those features' fingerprints (geometry as drawn, and the attributes the style
uses). A candidate meta-tile (one that a changed or moved feature reaches) whose lists
are the same in the snapshot and in the data draws the same picture, and is dropped:
an edit undone before the next run, a cut and paste to the same place in the order, or
a reordering among features that never share a meta-tile re-render nothing.
"""

from __future__ import annotations

import numpy as np

from tiledelta.grid import TilingScheme, metatile_bounds
from tiledelta.grid.boxindex import BoxIndex


class OrderedBoxes:
    """A layer's boxes and fingerprints in draw order, with a box index."""

    def __init__(self, bounds: np.ndarray, fingerprints: np.ndarray) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
        self.fingerprints = np.asarray(fingerprints)
        self._index: BoxIndex | None = None

    def sequences(self, boxes: np.ndarray) -> list[np.ndarray]:
        """For each query box, the fingerprints of the features meeting it, in draw order."""
        if not len(self.bounds) or not len(boxes):
            return [self.fingerprints[:0] for _ in range(len(boxes))]
        if self._index is None:
            self._index = BoxIndex(self.bounds)
        index = self._index
        return [self.fingerprints[index.query(*map(float, box))] for box in np.asarray(boxes)]


def same_pictures(
    scheme: TilingScheme,
    level: int,
    metatiles: np.ndarray,
    meta: int,
    layers: list[tuple[OrderedBoxes, OrderedBoxes, float]],
) -> np.ndarray:
    """Mask over ``metatiles`` (n, 2): True where every layer draws the same sequence.

    ``layers`` holds, per layer visible at ``level``, its (old, new) boxes and the query
    pad in map units (:func:`tiledelta.grid.query_pad`).
    """
    n = len(metatiles)
    same = np.ones(n, bool)
    if not n:
        return same
    ext = np.array(
        [metatile_bounds(scheme, level, int(r), int(c), meta) for r, c in metatiles],
        dtype=np.float64,
    )
    for old, new, pad in layers:
        boxes = ext + np.array([-pad, -pad, pad, pad])
        olds, news = old.sequences(boxes[same]), new.sequences(boxes[same])
        idx = np.flatnonzero(same)
        for i, a, b in zip(idx, olds, news, strict=True):
            if len(a) != len(b) or not np.array_equal(a, b):
                same[i] = False
    return same
