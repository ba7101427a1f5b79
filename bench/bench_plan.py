"""Planning a seed: ``metatiles_for_boxes`` and ``plan_for_boxes`` on 1× and 10× the buildings.

    .venv/bin/python bench/bench_plan.py [--levels 0-14] [--copies 10] [--repeat 3] [--no-old]

The boxes are the Clatsop buildings' (23,953, EPSG:3857) and ``--copies`` copies of them
shifted side by side (as bench_dask.py builds its 10× data). Per level, the best of
``--repeat`` runs of the current :func:`tiledelta.grid.metatiles_for_boxes` and of the
function it replaced (kept below as ``old_metatiles_for_boxes``, candidate expansion and
``np.unique(axis=0)``), the meta-tiles found (checked equal), and the whole seed plan
(:func:`tiledelta.plan.plan_for_boxes`, style visibility, extent clip). Goal: a seed plan
over 240,000 features at levels 0–14 under 1 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import clatsop_shapefile, make_project

from tiledelta.grid import metatile_grid, metatiles_for_boxes, query_pad


def old_metatiles_for_boxes(scheme, level, boxes, pad, meta):  # noqa: ANN001, ANN201
    """The implementation before issue 13 (for the comparison)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros((0, 2), dtype=np.int64)
    res = scheme.resolution(level)
    mw = meta * scheme.tile_width * res
    mh = meta * scheme.tile_height * res
    c0 = np.floor((boxes[:, 0] - pad - scheme.origin_x) / mw).astype(np.int64) - 1
    c1 = np.floor((boxes[:, 2] + pad - scheme.origin_x) / mw).astype(np.int64) + 1
    r0 = np.floor((scheme.origin_y - boxes[:, 3] - pad) / mh).astype(np.int64) - 1
    r1 = np.floor((scheme.origin_y - boxes[:, 1] + pad) / mh).astype(np.int64) + 1
    r0, c0 = np.maximum(r0, 0), np.maximum(c0, 0)
    mgrid = metatile_grid(scheme, level, meta)
    if mgrid is not None:
        r1, c1 = np.minimum(r1, mgrid[0] - 1), np.minimum(c1, mgrid[1] - 1)
    ok = (r0 <= r1) & (c0 <= c1)
    r0, r1, c0, c1, boxes = r0[ok], r1[ok], c0[ok], c1[ok], boxes[ok]
    if not len(r0):
        return np.zeros((0, 2), dtype=np.int64)
    nr, nc = r1 - r0 + 1, c1 - c0 + 1
    n = nr * nc
    owner = np.repeat(np.arange(len(n)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rows = r0[owner] + k // nc[owner]
    cols = c0[owner] + k % nc[owner]
    tw, th = scheme.tile_width * res, scheme.tile_height * res
    xmin = scheme.origin_x + (cols * meta) * tw
    ymax = scheme.origin_y - (rows * meta) * th
    xmax = xmin + meta * scheme.tile_width * res
    ymin = ymax - meta * scheme.tile_height * res
    b = boxes[owner]
    hit = (
        (b[:, 0] <= xmax + pad)
        & (b[:, 2] >= xmin - pad)
        & (b[:, 1] <= ymax + pad)
        & (b[:, 3] >= ymin - pad)
    )
    return np.unique(np.column_stack([rows[hit], cols[hit]]), axis=0).reshape(-1, 2)


def building_boxes(copies: int) -> np.ndarray:
    """The buildings' boxes (EPSG:3857), ``copies`` times, shifted side by side."""
    import pyogrio.raw
    import shapely

    meta, _f, geoms, _v = pyogrio.raw.read(str(clatsop_shapefile()), columns=[])
    shp = shapely.from_wkb(geoms)
    if meta["crs"] and "3857" not in str(meta["crs"]):
        import pyproj

        tr = pyproj.Transformer.from_crs(meta["crs"], "EPSG:3857", always_xy=True)
        shp = shapely.transform(shp, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    b = shapely.bounds(shp)
    step = (b[:, 2].max() - b[:, 0].min()) * 1.05
    return np.concatenate([b + [k * step, 0, k * step, 0] for k in range(copies)])


def best(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="0-14")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-old", action="store_true", help="skip the old function (slow)")
    args = ap.parse_args()
    from tiledelta.api import load_project
    from tiledelta.plan import plan_for_boxes

    with tempfile.TemporaryDirectory() as tmp:
        project = load_project(make_project(Path(tmp) / "p", args.levels))
    scheme, s = project.scheme, project.settings
    levels = project.levels
    for copies in sorted({1, args.copies}):
        boxes = building_boxes(copies)
        print(f"\n{len(boxes):,} boxes ({copies}×), meta-tile {s.metatile}, buffer {s.buffer} px")
        print(f"{'level':>5} {'meta-tiles':>10} {'new s':>8} {'old s':>8} {'speed-up':>8}")
        tot_new = tot_old = 0.0
        for level in levels:
            pad = query_pad(scheme, level, s.buffer)
            t_new, got = best(
                lambda lv=level, p=pad, b=boxes: metatiles_for_boxes(scheme, lv, b, p, s.metatile),
                args.repeat,
            )
            tot_new += t_new
            old = ""
            if not args.no_old:
                t_old, want = best(
                    lambda lv=level, p=pad, b=boxes: old_metatiles_for_boxes(
                        scheme, lv, b, p, s.metatile
                    ),
                    1,
                )
                tot_old += t_old
                assert np.array_equal(got, want), f"level {level}: results differ"
                old = f"{t_old:8.3f} {t_old / t_new:7.1f}×"
            print(f"{level:>5} {len(got):>10,} {t_new:8.4f} {old}")
        old_tot = "" if args.no_old else f"{tot_old:8.3f} {tot_old / tot_new:7.1f}×"
        print(f"{'total':>5} {'':>10} {tot_new:8.3f} {old_tot}")
        t_plan, plan = best(
            lambda b=boxes: plan_for_boxes(
                scheme,
                project.style,
                {"buildings": b},
                levels,
                s.metatile,
                s.buffer,
                extent=project.extent,
            ),  # fmt: skip
            args.repeat,
        )
        print(f"seed plan (plan_for_boxes, levels {args.levels}): {t_plan:.3f} s, "
              f"{plan.metatile_count:,} meta-tiles")  # fmt: skip


if __name__ == "__main__":
    main()
