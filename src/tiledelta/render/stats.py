"""What a render run counts, and the blank-tile rule: plain data, no Mapnik."""

from __future__ import annotations

from dataclasses import dataclass, field

from tiledelta.grid import Bounds, TilingScheme, tile_range

#: A rendered tile: (level, row, col, encoded bytes), bytes None for a blank tile.
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


@dataclass
class RunStats:
    tiles_rendered: int = 0  # tiles cut from rendered meta-tiles (blank ones included)
    tiles_written: int = 0  # tiles stored with new bytes
    tiles_unchanged: int = 0  # rendered tiles whose stored bytes were already identical
    tiles_removed: int = 0  # stored tiles that became blank and were deleted
    tiles_blank: int = 0  # blank tiles (not stored)
    metatiles: int = 0
    levels: dict[int, int] = field(default_factory=dict)  # level -> tiles written (seed)
    changed: list[tuple[int, int, int]] = field(default_factory=list)  # written or removed
    planned: dict[int, int] = field(default_factory=dict)  # level -> tiles in the plan
    tiles_blank_stored: int = 0  # background-only tiles filled in (blank_tiles = "store")

    def count_level(self, level: int) -> None:
        self.levels[level] = self.levels.get(level, 0) + 1
