"""Rendering with Mapnik: meta-tiles drawn from in-memory datasources, cut and encoded.

This is the only package that imports Mapnik, and importing it does not: the modules
that draw do (:mod:`~tiledelta.render.renderer`, :mod:`~tiledelta.render.pool`,
:mod:`~tiledelta.render.validate`). Detection, planning, the server-side update,
publishing and serving never load them, so they run where Mapnik is not installed.

- :mod:`~tiledelta.render.renderer`: :class:`Renderer` (one per process) and tile encoding;
- :mod:`~tiledelta.render.pool`: a tile plan run in worker processes, the parent as the
  only writer, each bundle written once;
- :mod:`~tiledelta.render.stats`: the counts of a run, and the blank-tile rule;
- :mod:`~tiledelta.render.throttle`: a tiles-per-second cap.
"""

from __future__ import annotations

import importlib.util

from tiledelta.errors import RenderUnavailable
from tiledelta.render.stats import BlankFill, RunStats, TileResult
from tiledelta.render.throttle import Throttle

__all__ = [
    "BlankFill",
    "RunStats",
    "Throttle",
    "TileResult",
    "mapnik_installed",
    "require_mapnik",
]


def require_mapnik() -> None:
    """Raise :class:`RenderUnavailable` (one line naming the ``render`` extra) unless
    Mapnik can be imported; call it before a rendering command writes anything."""
    if not mapnik_installed():
        raise RenderUnavailable(
            "local rendering needs Mapnik, which is not installed; "
            'install it with: pip install "tiledelta[render]" (Linux and macOS)'
        )


def mapnik_installed() -> bool:
    """True when Mapnik can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("mapnik") is not None
    except (ImportError, ValueError):  # blocked, or a stub without a spec
        return False
