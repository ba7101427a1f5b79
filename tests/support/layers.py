"""A :class:`~tiledelta.sources.LayerData` made of given arrays, no geometry (the snapshot
tests: what is recorded and read back is keys, fingerprints and boxes)."""

from __future__ import annotations

import numpy as np

from tiledelta.sources import LayerData


def layer(name: str, *, keys, fingerprints, bounds) -> LayerData:
    return LayerData(
        name=name,
        keys=keys,
        wkb=np.empty(len(fingerprints), dtype=object),
        bounds=bounds,
        attrs={},
        fingerprints=fingerprints,
    )
