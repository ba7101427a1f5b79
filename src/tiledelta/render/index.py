"""One :class:`~tiledelta.grid.boxindex.BoxIndex` per layer, for the renderer.

The render pool builds them once in the parent, before its workers fork, so the workers
share the index's pages instead of each indexing every layer.
"""

from __future__ import annotations

from collections.abc import Mapping

from tiledelta.grid.boxindex import BoxIndex
from tiledelta.sources import LayerData

__all__ = ["BoxIndex", "build_indexes"]


def build_indexes(layers: Mapping[str, LayerData]) -> dict[str, BoxIndex | None]:
    """A :class:`BoxIndex` per layer (None for an empty one)."""
    return {name: BoxIndex(data.bounds) if len(data) else None for name, data in layers.items()}
