"""Full build of the Clatsop buildings: tiles/s, overhead over raw Mapnik, peak memory.

    .venv/bin/python bench/bench_seed.py [--levels 0-16] [--processes 2]

Reference (measured on this 2-core machine, docs/findings.md): MapProxy 7 with its Mapnik
source seeded levels 0-16 in 54.7 s (4x4 meta-tiles, 64 px buffer, PNG); raw Mapnik on the
full 1,258 meta-tiles of the county took 12.2 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import mapnik
from common import STYLE, clatsop_shapefile, make_project, peak_rss_mb

MAPPROXY_SECONDS = 54.7


def _raw_render(args):
    """Raw Mapnik over the shapefile: render meta-tiles, encode tiles, nothing else."""
    style_xml, boxes, size = args
    m = mapnik.Map(size, size)
    mapnik.load_map_from_string(m, style_xml)
    m.buffer_size = 64
    n = 0
    for b in boxes:
        m.zoom_to_box(mapnik.Box2d(*b))
        im = mapnik.Image(size, size)
        mapnik.render(m, im)
        for j in range(0, size, 256):
            for i in range(0, size, 256):
                v = im.view(i, j, 256, 256)
                if not v.is_solid():
                    v.to_string("png32")
                    n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--levels", default="0-16")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument(
        "--png-compression", help="[cache] png_compression (default: the project's, fast)"
    )
    args = ap.parse_args()

    from tiledelta.api import load_project, seed
    from tiledelta.grid import metatile_bounds
    from tiledelta.plan import full_plan
    from tiledelta.sources import read_layers

    with tempfile.TemporaryDirectory() as tmp:
        root = make_project(Path(tmp) / "clatsop", args.levels)
        project = load_project(root)
        project = project.updated(render={"processes": args.processes})
        if args.png_compression:
            project = project.updated(cache={"png_compression": args.png_compression})
        t = time.perf_counter()
        result = seed(project)
        wall = time.perf_counter() - t

        # Raw Mapnik on the same meta-tiles, same processes: the floor we compare against.
        layers = read_layers(project)
        plan = full_plan(project, layers, project.levels)
        boxes = [
            tuple(metatile_bounds(project.scheme, lv, r, c, 4))
            for lv, mts in plan.levels.items()
            for r, c in mts.tolist()
        ]
        xml = STYLE.format(kind="shape", path=clatsop_shapefile())
        chunks = [(xml, boxes[i :: args.processes], 1024) for i in range(args.processes)]
        t = time.perf_counter()
        with mp.get_context("fork").Pool(args.processes) as pool:
            raw_tiles = sum(pool.map(_raw_render, chunks))
        raw = time.perf_counter() - t

    me, kids = peak_rss_mb()
    print(
        f"levels {args.levels}, {args.processes} processes, Clatsop buildings (23,953), "
        f"png_compression {project.config.cache.png_compression}"
    )
    print(f"meta-tiles rendered     {result['metatiles_rendered']:>10,}")
    print(f"tiles cut / stored      {result['tiles_rendered']:>10,} / {result['tiles_written']:,}")
    print(
        f"tiledelta seed          {wall:>10.2f} s  "
        f"({result['tiles_rendered'] / wall:,.0f} tiles/s of the grid cut, "
        f"{result['tiles_written'] / wall:,.0f} stored tiles/s)"
    )
    print(f"raw Mapnik, same tiles  {raw:>10.2f} s  ({raw_tiles:,} non-solid tiles encoded)")
    print(f"overhead over Mapnik    {100 * (wall - raw) / raw:>10.1f} %")
    print(
        f"MapProxy 7 (reference)  {MAPPROXY_SECONDS:>10.2f} s  -> tiledelta is "
        f"{MAPPROXY_SECONDS / wall:.1f}x faster"
    )
    print(f"peak RSS                {me:>10.0f} MB parent, {kids:.0f} MB largest worker")


if __name__ == "__main__":
    main()
