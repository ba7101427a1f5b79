"""What a build is given by the run lifecycle, and what it hands back.

A build (:mod:`~tiledelta.build.seed`, :mod:`~tiledelta.build.update`, the server-side
update in :mod:`tiledelta.publish.arcgis.cache`) reads, detects, plans and writes. It
neither locks, records, reports nor notifies: :func:`tiledelta.runs.lifecycle.run` does,
around it. The one thing a build must say on the way is its dirty area, through
:meth:`RunContext.journal`, before it writes the first tile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tiledelta.change import Changes, write_journal
from tiledelta.project import Project
from tiledelta.render import RunStats
from tiledelta.sources import LayerData

Progress = Callable[[int, int], None]
#: seed | update | rebuild (an update that rebuilt everything) | arcgis | arcgis-baseline
RunKind = Literal["seed", "update", "rebuild", "arcgis", "arcgis-baseline"]
BeforeSink = Callable[[list[tuple[tuple[int, int, int], bytes | None]]], None]


@dataclass
class RunContext:
    """The project, the target and the callbacks of one run."""

    project: Project
    target: str = "local"  # whose snapshot: "local" (the cache) or "arcgis" (the server)
    progress: Progress | None = None
    say: Callable[[str], None] = lambda _line: None
    #: receives what each tile write replaces (updates keep it for the before/after view)
    before: BeforeSink | None = None
    stages: dict[str, float] = field(default_factory=dict)
    journaled: bool = False
    #: where the build is (a seed: levels done, meta-tiles done/total), for the record
    #: of a run that is interrupted
    position: dict[str, Any] = field(default_factory=dict)

    def journal(self, boxes: dict[str, np.ndarray]) -> None:
        """Save the run's dirty boxes before its first write (:mod:`tiledelta.change.journal`)."""
        write_journal(self.project, boxes, self.target)
        self.journaled = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage of the run into :attr:`stages` (seconds, summed if repeated)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


@dataclass(frozen=True)
class Scope:
    """The part of the cache a run is limited to (``--levels``, ``--extent``, ``--aoi``).

    ``area`` is a shapely geometry in the scheme CRS; a meta-tile is in scope when its
    extent overlaps it. A run with a scope refreshes those meta-tiles in the existing
    cache and leaves the snapshot as it is (the next full update still sees every change).
    """

    levels: tuple[int, ...] | None = None
    area: Any = None
    #: how the area was given, for the summary ("extent" or the --aoi file)
    source: str | None = None

    @property
    def partial(self) -> bool:
        """True when the run covers less than the whole cache."""
        return self.levels is not None or self.area is not None

    def as_json(self) -> dict[str, Any]:
        """The scope as the run summary's ``partial`` field."""
        out: dict[str, Any] = {}
        if self.levels is not None:
            out["levels"] = list(self.levels)
        if self.area is not None:
            out["area"] = self.source or "extent"
            out["bounds"] = [round(float(v), 6) for v in self.area.bounds]
        return out


@dataclass
class BuildOutcome:
    """What a build did: enough for the lifecycle to record, summarise and report it."""

    kind: RunKind
    layers: dict[str, LayerData]
    levels: list[int]
    stats: RunStats = field(default_factory=RunStats)
    changes: Changes | None = None
    rebuild: str | None = None  # why an update rebuilt everything
    #: tiles written or removed (updates); None for a seed (the viewer then shows no diff)
    changed_tiles: list[tuple[int, int, int]] | None = None
    #: per level, the figures of the summary's ``levels`` (default: tiles per level)
    level_info: dict[int, dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific summary fields
    #: a run limited to a :class:`Scope`: the lifecycle records the run but neither
    #: advances the snapshot nor clears the update journal
    partial: bool = False
