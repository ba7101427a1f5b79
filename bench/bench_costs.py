"""Issue 13's side-by-side figures in one run: tiledelta against raw Mapnik doing the same work.

    .venv/bin/python bench/bench_costs.py [--quick] [--processes 2] [--only seed,update,scale]
        [--seed-levels 0-16,0-18] [--update-levels 0-19] [--edits 1,10,100,1000]
        [--copies 10] [--repeat 1] [--keep DIR] [--no-floor-index]

1. **seed**: ``tiledelta seed`` of the Clatsop buildings (shapefile) against raw Mapnik
   rendering the same non-empty meta-tiles (the seed's own plan) with its default PNG
   (``to_string("png32")``, solid tiles skipped as in bench_seed.py), same processes:
   time and ratio (goal <= 0.6x at 0-16), and bytes per tile on the very tiles raw Mapnik
   encoded: tiledelta's stored tile against Mapnik's PNG (goal <= 1.10x).
2. **update** after moving 1, 10, 100 and 1,000 buildings by 25 m (GeoPackage, key FID_1,
   one after the other on the same cache) against the proportional floor: raw Mapnik
   rendering exactly the meta-tiles the update renders (``plan_update`` before the run)
   from the edited data, encoding their non-solid tiles (goal <= 1.0x at 10 edits).
3. **scale**: status and update on 1x and ``--copies``x data (copies side by side): with
   nothing changed, and after the 10-building edit; the 10-edit update against its floor
   from that data (goal at 10x: <= 1.2x).

Every tiledelta run is a fresh ``python -m tiledelta ... --json`` process (start-up and
imports count): "e2e" is its wall time; "run" is what the library call pays (the
summary's ``load`` + ``seconds``, as bench_update.py times it). Raw Mapnik runs in a fresh
process too (Mapnik imported before the clock; the pool's start is timed), reading a
shapefile of the same data with Mapnik's spatial index (``shapeindex`` from its wheel;
``--no-floor-index``: without, a slower floor at 10x). Peak RSS: the parent's ``VmHWM``
and the largest worker's (``RUSAGE_CHILDREN``). ``--quick``: levels 0-14, edits 1 and 10,
a smoke run (it overrides --seed-levels, --update-levels and --edits).
The full run seeds 1x and 10x data at the update levels; expect tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    STYLE,
    buildings_copies,
    clatsop_shapefile,
    make_project,
    vm_hwm_mb,
    write_buildings,
    write_shapefile,
)

HERE = Path(__file__).resolve()
#: --keep: leave the projects in the work folder (to look at what a run did)
KEEP = False
#: --no-floor-index clears it: raw Mapnik reads its shapefile without Mapnik's .index
FLOOR_INDEX = True
#: ``python -m tiledelta`` with its peak RSS (own VmHWM, largest worker) written at exit.
WRAP = """
import atexit, sys

def _rss():
    import json, os, resource
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            hwm = next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(os.environ["BENCH_RSS_OUT"], "w") as f:
        json.dump({"parent_mb": hwm, "worker_mb": kids}, f)

atexit.register(_rss)
import runpy
sys.argv[0] = "tiledelta"
runpy.run_module("tiledelta", run_name="__main__", alter_sys=True)
"""


# --- raw Mapnik, in its own process -------------------------------------------------------


def _raw_worker(args: tuple) -> tuple[list, list, float]:
    """Render meta-tiles with raw Mapnik, encode each non-solid 256 px tile as png32."""
    import mapnik

    xml, items, size, buffer, meta = args
    m = mapnik.Map(size, size)
    mapnik.load_map_from_string(m, xml)
    m.buffer_size = buffer
    addrs, sizes = [], []
    for lv, mr, mc, *box in items:
        m.zoom_to_box(mapnik.Box2d(*box))
        im = mapnik.Image(size, size)
        mapnik.render(m, im)
        for j in range(0, size, 256):
            for i in range(0, size, 256):
                v = im.view(i, j, 256, 256)
                if not v.is_solid():
                    sizes.append(len(v.to_string("png32")))
                    addrs.append((lv, mr * meta + j // 256, mc * meta + i // 256))
    return addrs, sizes, vm_hwm_mb()


def raw_floor_main(spec_path: str) -> None:
    """``--raw-floor SPEC``: time raw Mapnik on the spec's meta-tiles; write the result."""
    import mapnik  # noqa: F401 - imported before the clock, as the workers inherit it

    spec = json.loads(Path(spec_path).read_text())
    items = np.load(spec["items"]).tolist()
    n = spec["processes"]
    chunks = [
        (spec["style"], items[i::n], spec["size"], spec["buffer"], spec["meta"]) for i in range(n)
    ]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(n) as pool:
        parts = pool.map(_raw_worker, chunks)
    seconds = time.perf_counter() - t
    addrs = [a for p in parts for a in p[0]]
    sizes = [s for p in parts for s in p[1]]
    np.savez(spec["tiles"], addrs=np.asarray(addrs, dtype=np.int64).reshape(-1, 3), sizes=sizes)
    out = {
        "seconds": seconds,
        "tiles": len(sizes),
        "bytes": int(sum(sizes)),
        "worker_mb": max((p[2] for p in parts), default=0.0),
        "parent_mb": vm_hwm_mb(),
    }
    Path(spec["out"]).write_text(json.dumps(out))


def index_shapefile(shp: Path) -> None:
    """Give raw Mapnik's shapefile its spatial index (``shapeindex``, shipped in Mapnik's
    wheel), as a fast raw Mapnik setup would; a note and no index where it cannot run."""
    if not FLOOR_INDEX:
        return
    import mapnik

    home = Path(mapnik.__file__).parent
    tool = home / "bin" / "shapeindex"
    env = {**os.environ, "LD_LIBRARY_PATH": str(home / "lib")}
    try:
        subprocess.run([str(tool), str(shp)], check=True, capture_output=True, env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  note: no .index for {shp} ({exc}); raw Mapnik scans the whole file", flush=True)


def floor_copy(src: Path, dst_dir: Path) -> Path:
    """A copy of a shapefile (all its parts) for raw Mapnik, indexed."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for part in src.parent.glob(src.stem + ".*"):
        shutil.copy2(part, dst_dir / part.name)
    index_shapefile(dst_dir / src.name)
    return dst_dir / src.name


def raw_floor(work: Path, project, plan_levels: dict, shapefile: Path, processes: int) -> dict:
    """Raw Mapnik on ``plan_levels`` ({level: (row, col) meta-tiles}) in a fresh process."""
    from tiledelta.grid import metatile_bounds

    cfg = project.config.render
    meta = cfg.metatile
    items = [
        (lv, r, c, *metatile_bounds(project.scheme, lv, r, c, meta))
        for lv, mts in sorted(plan_levels.items())
        for r, c in np.asarray(mts).reshape(-1, 2).tolist()
    ]
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "items.npy", np.asarray(items, dtype=np.float64).reshape(-1, 7))
    spec = {
        "style": STYLE.format(kind="shape", path=shapefile),
        "items": str(work / "items.npy"),
        "size": meta * 256,
        "buffer": cfg.buffer,
        "meta": meta,
        "processes": processes,
        "out": str(work / "raw.json"),
        "tiles": str(work / "raw_tiles.npz"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, str(HERE), "--raw-floor", str(work / "spec.json")]
    subprocess.run(cmd, check=True, cwd=HERE.parent)
    res = json.loads((work / "raw.json").read_text())
    res["metatiles"] = len(items)
    res["tiles_file"] = spec["tiles"]
    return res


# --- tiledelta, in its own process --------------------------------------------------------


def tiledelta(*args: str, work: Path) -> dict:
    """``python -m tiledelta ARGS --json`` in a fresh process: its JSON, wall time, RSS."""
    rss = work / "rss.json"
    env = {**os.environ, "BENCH_RSS_OUT": str(rss)}
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WRAP, *args, "--json"], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"tiledelta {' '.join(args)} failed ({out.returncode}):\n{out.stderr}{out.stdout}")
    res = json.loads(out.stdout)
    return {"json": res, "wall": wall, **json.loads(rss.read_text())}


def run_seconds(r: dict) -> float:
    """What the library call pays: the project load plus the run's own seconds."""
    return r["json"]["stages"].get("load", 0.0) + r["json"]["seconds"]


def stages_line(r: dict) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in r["json"]["stages"].items())


def stored_bytes(project, tiles_file: str) -> tuple[int, int]:
    """Bytes tiledelta stores for the tiles raw Mapnik encoded (and how many it holds)."""
    from tiledelta.stores import open_project_store

    addrs = np.load(tiles_file)["addrs"]
    total = found = 0
    with open_project_store(project, create=False, readonly=True) as store:
        for i in range(0, len(addrs), 50_000):
            got = store.get_many([tuple(a) for a in addrs[i : i + 50_000].tolist()])
            total += sum(len(b) for b in got.values())
            found += len(got)
    return total, found


def dirty_plan(root: Path) -> dict:
    """The meta-tiles ``tiledelta update`` will render, planned as the update plans them."""
    from tiledelta.api import load_project
    from tiledelta.build.update import plan_update
    from tiledelta.change import detect_changes
    from tiledelta.sources import read_layers

    project = load_project(root)
    layers = read_layers(project)
    changes = detect_changes(project, layers)
    if changes.rebuild:
        sys.exit(f"{root}: the update would rebuild everything ({changes.rebuild})")
    return plan_update(project, changes, layers).levels


def project_of(root: Path, processes: int):
    from tiledelta.api import load_project

    project = load_project(root).updated(render={"processes": processes})
    project.save()
    return project


# --- the three parts ----------------------------------------------------------------------


def part_seed(tmp: Path, levels: str, processes: int) -> dict:
    from tiledelta.plan import full_plan
    from tiledelta.sources import read_layers

    root = make_project(tmp / f"seed-{levels}", levels)
    project = project_of(root, processes)
    td = tiledelta("seed", "--project", str(root), work=tmp)
    plan = full_plan(project, read_layers(project), project.levels).levels
    shp = floor_copy(clatsop_shapefile(), tmp / "floor-seed")
    raw = raw_floor(tmp / f"raw-seed-{levels}", project, plan, shp, processes)
    td_bytes, found = stored_bytes(project, raw["tiles_file"])
    row = {
        "levels": levels,
        "metatiles": td["json"]["metatiles_rendered"],
        "raw_metatiles": raw["metatiles"],
        "tiles": raw["tiles"],
        "found": found,
        "e2e": td["wall"],
        "run": run_seconds(td),
        "raw": raw["seconds"],
        "td_bpt": td_bytes / max(found, 1),
        "raw_bpt": raw["bytes"] / max(raw["tiles"], 1),
        "td_rss": (td["parent_mb"], td["worker_mb"]),
        "raw_rss": raw["worker_mb"],
        "stages": stages_line(td),
    }
    if not KEEP:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"  seed {levels}: tiledelta {row['run']:.2f} s run / {row['e2e']:.2f} s e2e, raw "
        f"{row['raw']:.2f} s; {row['td_bpt']:,.0f} vs {row['raw_bpt']:,.0f} B/tile",
        flush=True,
    )
    return row


def edit(root: Path, n: int, rng: np.random.Generator, floor_shp: Path) -> None:
    """Move ``n`` random buildings 25 m; rewrite the GeoPackage and the floor's shapefile."""
    import pyogrio.raw
    import shapely

    gpkg = str(root / "buildings.gpkg")
    meta, _fids, geoms, values = pyogrio.raw.read(gpkg, return_fids=True)
    shp = shapely.from_wkb(geoms)
    picked = rng.choice(len(shp), n, replace=False)
    shp[picked] = shapely.transform(shp[picked], lambda xy: xy + 25.0)
    wkb = shapely.to_wkb(shp)
    write_buildings(gpkg, wkb, values, list(meta["fields"]))
    write_shapefile(str(floor_shp), wkb, values, list(meta["fields"]))
    index_shapefile(floor_shp)


def data_project(tmp: Path, copies: int, levels: str, processes: int) -> tuple[Path, Path, int]:
    """A project over ``copies`` copies of the buildings (GeoPackage, key FID_1), the same
    data as a shapefile for raw Mapnik, and the number of features."""
    root = make_project(tmp / f"x{copies}", levels, gpkg=True, key="FID_1")
    if copies > 1:
        wkb, values, fields = buildings_copies(copies)
        write_buildings(str(root / "buildings.gpkg"), wkb, values, fields)
    import pyogrio.raw

    meta, _f, geoms, values = pyogrio.raw.read(str(root / "buildings.gpkg"), return_fids=True)
    shp = tmp / f"floor-x{copies}" / "buildings.shp"
    shp.parent.mkdir(parents=True, exist_ok=True)
    write_shapefile(str(shp), geoms, values, list(meta["fields"]))
    index_shapefile(shp)
    project_of(root, processes)
    return root, shp, len(geoms)


def updates(
    tmp: Path, copies: int, levels: str, edits: list[int], processes: int, repeat: int
) -> dict:
    """Seed, idle status and update, then one update per edit count with its floor."""
    root, shp, n_features = data_project(tmp, copies, levels, processes)
    seed = tiledelta("seed", "--project", str(root), work=tmp)
    print(f"  {copies}x data seeded in {seed['wall']:.1f} s ({stages_line(seed)})", flush=True)

    def best(*args: str) -> dict:
        runs = [tiledelta(*args, "--project", str(root), work=tmp) for _ in range(repeat)]
        return min(runs, key=lambda r: r["wall"])

    out: dict = {"copies": copies, "features": n_features, "seed": seed, "rows": []}
    out["status_idle"] = best("status")
    out["update_idle"] = best("update")  # nothing changed (repeat is safe: still nothing)
    rng = np.random.default_rng(7)
    from tiledelta.api import load_project

    for n in edits:
        edit(root, n, rng, shp)
        status = tiledelta("status", "--project", str(root), work=tmp)
        plan = dirty_plan(root)
        raw = raw_floor(tmp / f"raw-x{copies}-{n}", load_project(root), plan, shp, processes)
        upd = tiledelta("update", "--project", str(root), work=tmp)
        row = {"edits": n, "status": status, "update": upd, "raw": raw}
        out["rows"].append(row)
        mt = upd["json"]["metatiles_rendered"]
        print(
            f"  {copies}x, {n} edits: update {run_seconds(upd):.2f} s run / {upd['wall']:.2f} s "
            f"e2e, {mt:,} meta-tiles (plan {raw['metatiles']:,}); floor {raw['seconds']:.2f} s",
            flush=True,
        )
    if not KEEP:
        shutil.rmtree(root, ignore_errors=True)
    return out


# --- the table ----------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def print_tables(seeds: list[dict], ups: dict | None, scale: list[dict], processes: int) -> None:
    print()
    print("=" * 100)
    print(f"issue 13, side by side ({processes} processes; times in seconds, noisy if not quiet)")
    print(f"raw Mapnik reads an {'indexed' if FLOOR_INDEX else 'unindexed'} shapefile")
    if seeds:
        print()
        print("seed: tiledelta vs raw Mapnik (png32, solid tiles skipped), same meta-tiles")
        print(
            f"{'levels':<7}{'meta':>7}{'td run':>8}{'td e2e':>8}{'raw':>8}{'run/raw':>8}"
            f"{'e2e/raw':>8}  {'B/tile td':>9}{'raw':>8}{'ratio':>7}  {'RSS MB td p/w':>14}"
            f"{'raw w':>7}"
        )
        for r in seeds:
            print(
                f"{r['levels']:<7}{r['metatiles']:>7,}{r['run']:>8.2f}{r['e2e']:>8.2f}"
                f"{r['raw']:>8.2f}{ratio(r['run'], r['raw']):>8}{ratio(r['e2e'], r['raw']):>8}  "
                f"{r['td_bpt']:>9,.0f}{r['raw_bpt']:>8,.0f}{ratio(r['td_bpt'], r['raw_bpt']):>7}"
                f"  {r['td_rss'][0]:>7.0f}/{r['td_rss'][1]:<6.0f}{r['raw_rss']:>7.0f}"
            )
            if r["metatiles"] != r["raw_metatiles"] or r["found"] != r["tiles"]:
                print(
                    f"  note: tiledelta rendered {r['metatiles']:,} meta-tiles, the plan has "
                    f"{r['raw_metatiles']:,}; it stores {r['found']:,} of raw's "
                    f"{r['tiles']:,} tiles"
                )
            print(f"  stages: {r['stages']}")
        print("  goals: time (run/raw) <= 0.6x at 0-16; bytes per tile <= 1.10x")
    for block in ([ups] if ups else []) + scale:
        print()
        print(f"update on {block['copies']}x data ({block['features']:,} features) vs floor")
        si, ui, sd = block["status_idle"], block["update_idle"], block["seed"]
        print(
            f"  seed {sd['wall']:.1f} s e2e, {sd['json']['metatiles_rendered']:,} meta-tiles, "
            f"peak RSS {sd['parent_mb']:.0f} MB parent, {sd['worker_mb']:.0f} MB worker"
        )
        print(
            f"  nothing changed: status {si['wall']:.2f} s e2e ({si['parent_mb']:.0f} MB); "
            f"update {ui['wall']:.2f} s e2e ({ui['parent_mb']:.0f}/{ui['worker_mb']:.0f} MB; "
            f"{stages_line(ui)})"
        )
        print(
            f"{'edits':>7}{'meta':>7}{'status':>8}{'run':>8}{'e2e':>8}{'floor':>8}"
            f"{'run/fl':>8}{'e2e/fl':>8}  {'RSS MB p/w':>11}{'floor w':>8}"
        )
        for row in block["rows"]:
            u, f = row["update"], row["raw"]
            print(
                f"{row['edits']:>7,}{u['json']['metatiles_rendered']:>7,}"
                f"{row['status']['wall']:>8.2f}{run_seconds(u):>8.2f}{u['wall']:>8.2f}"
                f"{f['seconds']:>8.2f}{ratio(run_seconds(u), f['seconds']):>8}"
                f"{ratio(u['wall'], f['seconds']):>8}  "
                f"{u['parent_mb']:>5.0f}/{u['worker_mb']:<5.0f}{f['worker_mb']:>8.0f}"
            )
            if u["json"]["metatiles_rendered"] != f["metatiles"]:
                ch = u["json"].get("changes") or {}
                print(
                    f"  note: the plan had {f['metatiles']:,} meta-tiles; the update's changes: "
                    f"{json.dumps(ch.get('layers'))}, rebuild {u['json'].get('rebuild')}"
                )
            print(f"  stages: {stages_line(u)}")
    print()
    print(
        "goals: update after 10 edits <= 1.0x its floor (1x data); on 10x data <= 1.2x "
        "(e2e: start-up and imports count)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="levels 0-14, edits 1 and 10")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--only", default="seed,update,scale", help="parts to run, comma-separated")
    ap.add_argument("--seed-levels", default="0-16,0-18")
    ap.add_argument("--update-levels", default="0-19")
    ap.add_argument("--edits", default="1,10,100,1000")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="idle status/update: best of N")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    ap.add_argument(
        "--no-floor-index",
        action="store_true",
        help="raw Mapnik reads its shapefiles without Mapnik's spatial index (.index)",
    )
    ap.add_argument("--raw-floor", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_floor:
        raw_floor_main(args.raw_floor)
        return
    global KEEP, FLOOR_INDEX
    KEEP = args.keep is not None
    FLOOR_INDEX = not args.no_floor_index
    if args.quick:
        args.seed_levels, args.update_levels, args.edits = "0-14", "0-14", "1,10"
    clatsop_shapefile()  # exits with a clear line when the shared data is absent
    parts = set(args.only.split(","))
    edits = [int(e) for e in args.edits.split(",")]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = args.keep or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        seeds, ups, scale = [], None, []
        if "seed" in parts:
            print("1. seed", flush=True)
            seeds = [part_seed(tmp, lv, args.processes) for lv in args.seed_levels.split(",")]
        if "update" in parts or "scale" in parts:
            print(f"2. updates at levels {args.update_levels}", flush=True)
            one = edits if "update" in parts else [10]
            ups = updates(tmp, 1, args.update_levels, one, args.processes, args.repeat)
        if "scale" in parts and args.copies > 1:
            print(f"3. {args.copies}x data at levels {args.update_levels}", flush=True)
            scale = [
                updates(tmp, args.copies, args.update_levels, [10], args.processes, args.repeat)
            ]
        print_tables(seeds, ups, scale, args.processes)


if __name__ == "__main__":
    main()
