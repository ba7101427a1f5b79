"""Tile plans: which meta-tiles to render, level by level (see :mod:`tiledelta.plan.plan`)."""

from tiledelta.plan.plan import (
    TilePlan,
    full_plan,
    plan_for_boxes,
    restrict_plan,
    restyled_visibility,
    update_plan,
    visible_levels,
)

__all__ = [
    "TilePlan",
    "full_plan",
    "plan_for_boxes",
    "restrict_plan",
    "restyled_visibility",
    "update_plan",
    "visible_levels",
]
