"""An update's fixed costs on 1x and Nx data (issue 13): what doesn't render dirty meta-tiles.

    .venv/bin/python bench/bench_fixed.py [--levels 0-14] [--copies 10] [--edits 10]
        [--processes 2]

For the Clatsop buildings (GeoPackage) and for ``--copies`` copies shifted side by side,
seeds ``--levels``, moves ``--edits`` buildings of the first copy by 25 m, and runs
``update``, timing the parts that used to grow with the data whatever the change:

- worker start-up: each render worker's ``_init`` (the Renderer and its layer index), and
  the parent's one index build before the pool forks (``render.index``, when present);
- the before store: every call of ``BeforeTiles`` (the replaced tiles for the swipe);
- bundle writes: ``CompactCache.put_many`` (whole-bundle rewrites), and how many bundles;
- the change map: ``render_changemap`` on the run's folder (again after the run, best of 3).

The update's own stage times are printed too. Times are wall seconds on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import copies_project, write_buildings


def _edit(root: Path, n: int, first: int) -> None:
    import pyogrio.raw
    import shapely

    gpkg = str(root / "buildings.gpkg")
    meta, _fids, geoms, values = pyogrio.raw.read(gpkg, return_fids=True)
    shp = shapely.from_wkb(geoms)
    picked = np.random.default_rng(7).choice(first, n, replace=False)
    shp[picked] = shapely.transform(shp[picked], lambda xy: xy + 25.0)
    write_buildings(gpkg, shapely.to_wkb(shp), values, list(meta["fields"]))


class _Timer:
    """Wraps ``obj.name`` to add its wall time to ``self.seconds``."""

    def __init__(self, obj, name: str, on_call=None) -> None:
        self.seconds, self.calls = 0.0, 0
        orig = getattr(obj, name)
        self.orig = orig

        def wrapped(*a, **kw):
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
                if on_call:
                    on_call(a, kw)

        setattr(obj, name, wrapped)


def run(root: Path, processes: int, edits: int, first: int) -> dict:
    from tiledelta.api import load_project, seed, update
    from tiledelta.render import pool
    from tiledelta.runs import folder as run_folder
    from tiledelta.runs.report.changemap import render_changemap
    from tiledelta.stores.compact import CompactCache

    project = load_project(root).updated(render={"processes": processes})
    project.save()
    t = time.perf_counter()
    seed(project, notify=False)
    seed_s = time.perf_counter() - t
    _edit(root, edits, first)

    log = root / "init-times.txt"
    orig_init = pool._init

    def timed_init(*a, **kw):
        t = time.perf_counter()
        orig_init(*a, **kw)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {time.perf_counter() - t}\n")

    pool._init = timed_init
    # after issue 13 the pool builds the index once, before it forks
    index_t = _Timer(pool, "build_indexes") if hasattr(pool, "build_indexes") else None
    before_t = _Timer(run_folder.BeforeTiles, "__call__")
    bundles: set = set()

    def count_bundles(a, _kw) -> None:
        store, tiles = a[0], a[1]
        bundles.update(store.bundle_path(lv, r, c) for lv, r, c, _ in tiles)

    put_t = _Timer(CompactCache, "put_many", count_bundles)
    t = time.perf_counter()
    try:
        res = update(load_project(root), notify=False)
    finally:
        pool._init = orig_init
        if index_t is not None:
            pool.build_indexes = index_t.orig
    upd_s = time.perf_counter() - t
    inits = [float(x.split()[1]) for x in log.read_text().split("\n") if x] if log.exists() else []
    from tiledelta.runs.folder import latest_run

    folder = latest_run(load_project(root))
    assert folder is not None
    cm = []
    for _ in range(3):
        t = time.perf_counter()
        render_changemap(load_project(root), folder)
        cm.append(time.perf_counter() - t)
    return {
        "seed_s": seed_s,
        "update_s": upd_s,
        "stages": res["stages"],
        "metatiles": res["metatiles_rendered"],
        "worker_init": inits,
        "index_build": index_t.seconds if index_t else None,
        "before_s": before_t.seconds,
        "before_calls": before_t.calls,
        "put_s": put_t.seconds,
        "bundles": len(bundles),
        "changemap_s": min(cm),
        "folder": str(folder),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--levels", default="0-14")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--edits", type=int, default=10)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--keep", help="copy each run's change map here")
    args = ap.parse_args()
    first = 23953
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.copies):
            root = copies_project(Path(tmp) / f"x{n}", args.levels, n)
            r = run(root, args.processes, args.edits, first)
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                png = Path(r["folder"]) / "changemap.png"
                if png.exists():
                    (Path(args.keep) / f"changemap-x{n}.png").write_bytes(png.read_bytes())
            print(f"{n}x ({n * first:,} buildings), levels {args.levels}, {args.processes} proc")
            print(f"  seed                  {r['seed_s']:8.2f} s")
            print(f"  update end to end     {r['update_s']:8.2f} s  ({r['metatiles']} meta-tiles)")
            print(
                "  stages                "
                + json.dumps({k: round(v, 3) for k, v in r["stages"].items()})
            )
            inits = ", ".join(f"{x:.3f}" for x in r["worker_init"])
            print(f"  worker _init          {inits} s")
            if r["index_build"] is not None:
                print(f"  parent index build    {r['index_build']:8.3f} s")
            print(f"  before store          {r['before_s']:8.3f} s  ({r['before_calls']} calls)")
            print(f"  bundle writes         {r['put_s']:8.3f} s  ({r['bundles']} bundles)")
            print(f"  change map            {r['changemap_s']:8.3f} s  (best of 3)")


if __name__ == "__main__":
    main()
