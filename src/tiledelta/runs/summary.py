"""The typed summary of a run: the ``--json`` output, ``summary.json`` and the report's input.

``kind`` says what ran, so readers never guess it from which keys are present:

- ``seed``: a full build;
- ``update``: an incremental update;
- ``rebuild``: an update that had to rebuild everything (``rebuild`` says why);
- ``arcgis``: cache jobs sent to ArcGIS Server; ``arcgis-baseline``: the server's cache
  marked current without sending anything.

Tile counts add up: every rendered tile is *written* (new bytes stored), *unchanged*
(the stored bytes were identical) or *blank* (background only: not stored, or removed
when a tile was stored there — counted again in *removed*, as are the tiles of a
dropped level).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tiledelta.build.context import RunKind


class LevelSummary(BaseModel):
    """Per level: tiles (stored by a seed, planned by an update), or a server job's scale."""

    model_config = ConfigDict(extra="forbid")

    tiles: int | None = None
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
    seconds: float = 0.0
    stages: dict[str, float] = {}
    changes: dict[str, Any] | None = None
    rebuild: str | None = None
    before_tiles_complete: bool | None = None
    jobs: list[dict[str, Any]] | None = None
    marked_current: bool | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary as plain JSON data (fields that do not apply are left out)."""
        return json.loads(self.model_dump_json(exclude_none=True))
