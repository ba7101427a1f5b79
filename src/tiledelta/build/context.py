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
