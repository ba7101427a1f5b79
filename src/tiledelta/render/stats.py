"""What a render run counts, and the blank-tile rule: plain data, no Mapnik."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiledelta.grid import Bounds, TilingScheme, tile_range

#: Meta-tiles per task of the local pool (a Dask task holds more: ``DaskEngine.chunk``).
CHUNK = 8


class Solid(bytes):
    """The bytes of a rendered tile of one colour that is not the background (inside a
    large polygon, open water, a forest fill): encoded once per colour per process and
    shared, and marked so that the writer counts it (:attr:`RunStats.tiles_solid`)."""

    __slots__ = ()


#: A rendered tile: (level, row, col, encoded bytes), bytes None for a blank tile
#: (:class:`Solid` bytes for a tile of one other colour).
TileResult = tuple[int, int, int, bytes | None]


@dataclass(frozen=True)
class BlankFill:
    """Background-only tiles to store: their bytes, and per level the inclusive
    (row0, row1, col0, col1) range they cover."""

    data: bytes
    ranges: dict[int, tuple[int, int, int, int]]

    def covers(self, level: int, row: int, col: int) -> bool:
        rng = self.ranges.get(level)
        return rng is not None and rng[0] <= row <= rng[1] and rng[2] <= col <= rng[3]

    def over(self, scheme: TilingScheme, levels: list[int], area: Bounds | None) -> BlankFill:
        """The same tile kept over ``area`` (nowhere when ``area`` is None)."""
        ranges = {}
        if area is not None:
            for level in levels:
                rng = tile_range(scheme, level, area, touch=False)
                if rng is not None:
                    ranges[level] = rng
        return BlankFill(self.data, ranges)


#: The counts of a run, in the words every reader uses (CLI, report, viewer, --json).
#: Every rendered tile is exactly one of written, unchanged or blank:
#: ``rendered = written + unchanged + blank``. Apart from that: ``removed`` (stored tiles
#: deleted: rendered blank where a tile was, blank copies left outside the data's new
#: extent, dropped levels) and ``blank_stored`` (the shared background-only copy stored
#: at an address, rendered blank or never rendered). What the run changed in the cache
#: (``tiles.json``) is ``written + blank_stored + removed``; a seed stores
#: ``written + blank_stored`` tiles. ``tiles_solid`` is not a fourth kind: it counts the
#: written or unchanged tiles of one colour other than the background.
COUNTS = ("rendered", "written", "unchanged", "blank", "removed", "blank_stored")


@dataclass
class RunStats:
    """What a run did to tiles (see :data:`COUNTS`), in all and per level."""

    tiles_rendered: int = 0  # tiles cut from rendered meta-tiles (blank ones included)
    tiles_written: int = 0  # rendered tiles with content, stored with new bytes
    tiles_unchanged: int = 0  # rendered tiles with content whose stored bytes were identical
    tiles_removed: int = 0  # stored tiles deleted
    tiles_blank: int = 0  # rendered tiles of background only (kept as a copy or not stored)
    metatiles: int = 0
    levels: dict[int, int] = field(default_factory=dict)  # level -> tiles stored by the run
    changed: list[tuple[int, int, int]] = field(default_factory=list)  # stored or removed
    planned: dict[int, int] = field(default_factory=dict)  # level -> tiles in the plan
    tiles_blank_stored: int = 0  # blank copies stored (blank_tiles = "auto" / "store")
    #: level -> {count name: n}, the :data:`COUNTS` per level
    per_level: dict[int, dict[str, int]] = field(default_factory=dict)
    #: seconds the writing process spent storing tiles (the rest of a render stage renders)
    write_seconds: float = 0.0
    #: rendered tiles of one colour other than the background (written or unchanged ones:
    #: an extra count, not a fourth kind of tile), each encoded once per colour
    tiles_solid: int = 0

    def count(self, what: str, level: int, n: int = 1) -> None:
        """Add ``n`` to the count ``what`` (one of :data:`COUNTS`) at ``level``."""
        setattr(self, f"tiles_{what}", getattr(self, f"tiles_{what}") + n)
        row = self.per_level.setdefault(level, dict.fromkeys(COUNTS, 0))
        row[what] += n
        if what in ("written", "blank_stored"):
            self.levels[level] = self.levels.get(level, 0) + n

    def count_level(self, level: int) -> None:
        self.levels[level] = self.levels.get(level, 0) + 1

    def as_counts(self) -> dict[str, int]:
        """The run's :data:`COUNTS` in all."""
        return {what: getattr(self, f"tiles_{what}") for what in COUNTS}
