"""Tile plans: which meta-tiles to render, level by level.

A meta-tile must be drawn when a feature's bounding box meets its buffered
extent, because that is exactly what Mapnik reads to draw it. The same rule
gives the full build (every feature's box) and the dirty set of an update
(the old and new boxes of changed features), so both are computed here
without enumerating the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from tiledelta.change import Changes, LayerSnapshot
from tiledelta.grid import (
    Bounds,
    TilingScheme,
    mapnik_scale_denominator,
    metatile_bounds,
    metatile_tiles,
    metatiles_for_boxes,
    query_pad,
)
from tiledelta.plan.exact import OrderedBoxes, same_pictures
from tiledelta.project import Project
from tiledelta.sources import LayerData
from tiledelta.style import Style
from tiledelta.style import visible_levels as _style_visible_levels


@dataclass
class TilePlan:
    """Meta-tiles to render per level, as (mrow, mcol) int64 arrays, plus counts."""

    metatile: int
    levels: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def metatile_count(self) -> int:
        return sum(len(v) for v in self.levels.values())

    def tile_count(self, scheme: TilingScheme) -> dict[int, int]:
        """Tiles per level covered by the planned meta-tiles (clipped to the grid)."""
        out = {}
        for level, mt in self.levels.items():
            out[level] = int(
                sum(len(metatile_tiles(scheme, level, r, c, self.metatile)) for r, c in mt)
            )
        return out


def merge_metatiles(parts: list[np.ndarray]) -> np.ndarray:
    """The sorted union of (mrow, mcol) arrays, on a linear index (no row-wise sort)."""
    arrays = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in parts]
    mt = np.concatenate(arrays) if arrays else np.zeros((0, 2), dtype=np.int64)
    if not len(mt):
        return mt
    lo = mt.min(axis=0)
    ncols = int(mt[:, 1].max() - lo[1]) + 1
    lin = (mt[:, 0] - lo[0]) * ncols + (mt[:, 1] - lo[1])
    if len(arrays) > 1 or np.any(np.diff(lin) <= 0):
        lin = np.unique(lin)
    return np.column_stack([lin // ncols + lo[0], lin % ncols + lo[1]])


def visible_levels(style: Style, scheme: TilingScheme, levels: list[int]) -> dict[str, list[int]]:
    """Per layer, the levels at which Mapnik can draw anything for it (no Mapnik needed)."""
    return _style_visible_levels(
        style.xml_without_datasources, levels, lambda lv: mapnik_scale_denominator(scheme, lv)
    )


def plan_for_boxes(
    scheme: TilingScheme,
    style: Style,
    boxes_by_layer: dict[str, np.ndarray],
    levels: list[int],
    meta: int,
    buffer_px: int,
    *,
    visibility: dict[str, list[int]] | None = None,
    extent: Bounds | None = None,
    buffers: dict[str, int] | None = None,
) -> TilePlan:
    """The meta-tiles of ``levels`` that any of the layers' boxes reach (``buffers``: pixels
    per layer, instead of the style's)."""
    visibility = visibility if visibility is not None else visible_levels(style, scheme, levels)
    plan = TilePlan(metatile=meta)
    for level in levels:
        parts = []
        for name, boxes in boxes_by_layer.items():
            if level not in visibility.get(name, ()):
                continue
            if buffers is not None and name in buffers:
                lyr_buffer: int | None = buffers[name]
            else:
                lyr_buffer = style.layer(name).buffer_size
            pad = query_pad(scheme, level, buffer_px if lyr_buffer is None else lyr_buffer)
            parts.append(metatiles_for_boxes(scheme, level, boxes, pad, meta))
        if parts:
            mt = merge_metatiles(parts)
            if extent is not None and len(mt):
                ext = metatiles_for_boxes(scheme, level, np.array([extent]), 0.0, meta)
                lo, hi = ext.min(axis=0), ext.max(axis=0)
                keep = np.all((mt >= lo) & (mt <= hi), axis=1)
                mt = mt[keep]
            if len(mt):
                plan.levels[level] = mt
    return plan


def full_plan(project: Project, layers: dict[str, LayerData], levels: list[int]) -> TilePlan:
    """Meta-tiles that any feature reaches, per level (all others are blank)."""
    s = project.settings
    return plan_for_boxes(
        project.scheme,
        project.style,
        {name: d.bounds for name, d in layers.items()},
        levels,
        s.metatile,
        s.buffer,
        extent=project.extent,
    )


def update_plan(
    project: Project,
    changes: Changes,
    layers: dict[str, LayerData],
) -> TilePlan:
    """Meta-tiles to re-render after ``changes``: exactly those whose picture can differ.

    Candidates are the meta-tiles that a changed or reordered feature's old or new box
    reaches; of those, a meta-tile is kept only when, for some layer visible at its level,
    the ordered fingerprints of the features it draws differ between the snapshot and the
    data (:mod:`tiledelta.plan.exact`). An unfinished run's boxes (the journal) are
    re-rendered unconditionally, and new levels fully.
    """
    s = project.settings
    scheme, style = project.scheme, project.style
    old_levels = [lv for lv in project.levels if lv not in changes.new_levels]
    vis = visible_levels(style, scheme, old_levels)
    plan = plan_for_boxes(
        scheme,
        style,
        changes.change_boxes(),
        old_levels,
        s.metatile,
        s.buffer,
        visibility=vis,
        extent=project.extent,
    )
    ordered = {
        name: (_ordered(changes.snapshot.get(name)), OrderedBoxes(d.bounds, d.fingerprints))
        for name, d in layers.items()
    }
    for level, mts in list(plan.levels.items()):
        checks = [
            (*ordered[name], query_pad(scheme, level, _buffer(style, name, s.buffer)))
            for name in ordered
            if level in vis.get(name, ())
        ]
        keep = mts[~same_pictures(scheme, level, mts, s.metatile, checks)]
        if len(keep):
            plan.levels[level] = keep
        else:
            del plan.levels[level]
    if changes.journal:
        unfinished = plan_for_boxes(
            scheme,
            style,
            changes.journal,
            old_levels,
            s.metatile,
            s.buffer,
            visibility=vis,
            extent=project.extent,
        )
        for level, mts in unfinished.levels.items():
            both = [mts] if level not in plan.levels else [plan.levels[level], mts]
            plan.levels[level] = merge_metatiles(both)
    if changes.restyled:
        # A layer's own symbology or labels changed (or it came or went): every meta-tile
        # it reaches, before or now, at the levels it drew or draws at.
        restyled = plan_for_boxes(
            scheme,
            style,
            {name: r.boxes for name, r in changes.restyled.items()},
            old_levels,
            s.metatile,
            s.buffer,
            visibility={name: r.levels for name, r in changes.restyled.items()},
            extent=project.extent,
            buffers={name: r.buffer for name, r in changes.restyled.items()},
        )
        for level, mts in restyled.levels.items():
            both = [mts] if level not in plan.levels else [plan.levels[level], mts]
            plan.levels[level] = merge_metatiles(both)
    if changes.new_levels:
        plan.levels.update(full_plan(project, layers, changes.new_levels).levels)
    return plan


def restyled_visibility(
    vis: dict[str, list[int]], changes: Changes
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """``vis`` widened by the restyled layers' old and new levels, and their buffers."""
    out = dict(vis)
    for name, r in changes.restyled.items():
        out[name] = sorted(set(out.get(name, [])) | set(r.levels))
    return out, {name: r.buffer for name, r in changes.restyled.items()}


def restrict_plan(
    plan: TilePlan,
    scheme: TilingScheme,
    *,
    levels: list[int] | tuple[int, ...] | None = None,
    area: shapely.Geometry | None = None,
) -> TilePlan:
    """The meta-tiles of ``plan`` at ``levels`` whose (unbuffered) extent overlaps ``area``
    (a shapely geometry in the scheme CRS; touching its edge is not overlapping)."""
    out = TilePlan(metatile=plan.metatile)
    meta = plan.metatile
    for level, mts in plan.levels.items():
        if levels is not None and level not in levels:
            continue
        if area is not None and len(mts):
            boxes = shapely.box(
                *np.array([metatile_bounds(scheme, level, r, c, meta) for r, c in mts.tolist()]).T
            )
            keep = shapely.intersects(area, boxes) & ~shapely.touches(area, boxes)
            mts = mts[keep]
        if len(mts):
            out.levels[level] = mts
    return out


def _ordered(snap: LayerSnapshot | None) -> OrderedBoxes:
    if snap is None:
        return OrderedBoxes(np.zeros((0, 4)), np.zeros(0, np.uint64))
    return OrderedBoxes(snap.bounds, snap.fingerprints)


def _buffer(style: Style, name: str, default: int) -> int:
    lyr_buffer = style.layer(name).buffer_size
    return default if lyr_buffer is None else lyr_buffer
