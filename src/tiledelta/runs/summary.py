"""The typed summary of a run: the ``--json`` output, ``summary.json`` and the report's input.

``kind`` says what ran, so readers never guess it from which keys are present:

- ``seed``: a full build;
- ``update``: an incremental update;
- ``rebuild``: an update that had to rebuild everything (``rebuild`` says why);
- ``arcgis``: cache jobs sent to ArcGIS Server; ``arcgis-baseline``: the server's cache
  marked current without sending anything.

Tile counts add up (the same words in the CLI, the report, the viewer, ``--json`` and
notifications; :data:`tiledelta.render.stats.COUNTS`):

- every rendered tile is exactly one of *written* (content, new bytes stored),
  *unchanged* (content, the stored bytes were identical) or *blank* (background only):
  ``tiles_rendered = tiles_written + tiles_unchanged + tiles_blank``;
- *removed*: stored tiles the run deleted (rendered blank where a tile was stored, blank
  copies outside the data's new extent, the tiles of a dropped level);
- *blank copies stored* (``tiles_blank_stored``): the shared background-only tile stored
  at an address (``blank_tiles = "auto"`` or ``"store"``), rendered blank or never rendered.

The tiles a run changed in the cache (``tiles.json``) number
``tiles_written + tiles_blank_stored + tiles_removed``; a seed stores
``tiles_written + tiles_blank_stored``. Per level, a local run (seed or update alike)
gives the same counts at that level; ``tiles`` is the tiles rendered there.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tiledelta.build.context import RunKind
from tiledelta.render.stats import COUNTS, RunStats


class LevelSummary(BaseModel):
    """Per level: a local run's counts (``tiles`` = rendered), or a server job's scale."""

    model_config = ConfigDict(extra="forbid")

    tiles: int | None = None
    rendered: int | None = None
    written: int | None = None
    unchanged: int | None = None
    blank: int | None = None
    removed: int | None = None
    blank_stored: int | None = None
    scale: float | None = None
    submitted: bool | None = None


class RunSummary(BaseModel):
    """What one run did."""

    model_config = ConfigDict(extra="forbid")

    kind: RunKind
    target: Literal["local", "arcgis"] = "local"
    run: int | None = None
    run_folder: str | None = None
    cache: str | None = None
    cache_kind: str | None = None
    levels: dict[str, LevelSummary] = {}
    metatiles_rendered: int = 0
    tiles_rendered: int = 0
    tiles_written: int = 0
    tiles_unchanged: int = 0
    tiles_removed: int = 0
    tiles_blank: int = 0
    tiles_blank_stored: int = 0
    #: rendered tiles of one colour other than the background (among the written and
    #: unchanged ones, not a fourth kind): encoded once per colour, stored once per bundle
    tiles_solid: int = 0
    seconds: float = 0.0
    #: seconds per stage, in order: ``startup`` (Python's start to tiledelta's first line),
    #: ``imports`` and ``load`` (the project and style) of a command line run, which come
    #: before ``seconds``; then the build's (``read``, ``detect``, ``plan``, ``render``,
    #: ``write``), ``record``, ``report``, and ``notify`` when ``[notify]`` is set
    stages: dict[str, float] = {}
    changes: dict[str, Any] | None = None
    rebuild: str | None = None
    before_tiles_complete: bool | None = None
    jobs: list[dict[str, Any]] | None = None
    marked_current: bool | None = None
    #: a run limited by --levels/--extent/--aoi: its levels and area (snapshot kept)
    partial: dict[str, Any] | None = None
    #: a seed that continued an interrupted one: what the earlier runs had built
    resumed: dict[str, Any] | None = None
    #: a seed that discarded an unfinished one of another plan: why (what changed)
    discarded: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON data (fields that do not apply are left out)."""
        return json.loads(self.model_dump_json(exclude_none=True))


def level_counts(stats: RunStats, level: int) -> dict[str, int]:
    """A local run's counts at ``level`` (:class:`LevelSummary` fields; ``tiles`` = rendered)."""
    row = stats.per_level.get(level) or dict.fromkeys(COUNTS, 0)
    return {"tiles": row["rendered"], **row}
