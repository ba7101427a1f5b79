"""`status` and `update` with nothing changed, on 1× and 10× the Clatsop buildings.

    .venv/bin/python bench/bench_unchanged.py [--levels 0-12] [--copies 10] [--repeat 3]
        [--hash-mb 100]

For each size (the buildings as a shapefile; ``--copies`` copies shifted side by side in
a GeoPackage, as bench_dask.py builds them), a project is seeded, then, best of
``--repeat``:

- ``status`` and ``update`` through the library (``api.changes_summary``, ``api.update``):
  the shortcut (files proven unchanged: nothing read) against ``full_compare=True``
  (every layer read, fingerprinted and diffed, as every run did before);
- the same as command lines (``tiledelta status``, ``tiledelta update``, with and
  without ``--full-compare``): wall time including Python's start and imports.

Then the cost of the content hash: BLAKE2b and SHA-256 (``hashlib.file_digest``) of a
``--hash-mb`` MB file, seconds per 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import copies_project, make_project

TILEDELTA = str(Path(sys.executable).with_name("tiledelta"))


def _best(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    from tiledelta.sources import files

    times, out = [], None
    for _ in range(repeat):
        files._DIGESTS.clear()  # hash again, as a new process does
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _cli(args: list[str], repeat: int) -> float:
    def once() -> None:
        subprocess.run([TILEDELTA, *args], check=True, capture_output=True)

    return _best(once, repeat)[0]


def measure(root: Path, label: str, repeat: int) -> None:
    from tiledelta import api

    project = api.load_project(root).updated(render={"processes": 2})
    project.save()
    time.sleep(2.1)  # files written less than 2 s ago get no proof (sources/files.py)
    t = time.perf_counter()
    api.seed(api.load_project(root), notify=False)
    seed_s = time.perf_counter() - t
    api.update(api.load_project(root), notify=False, full_compare=True)  # records proofs
    p = api.load_project(root)
    t_status, ch = _best(lambda: api.changes_summary(p), repeat)
    assert ch.get("unchanged_files"), "the shortcut did not apply"
    t_status_full, _ = _best(lambda: api.changes_summary(p, full_compare=True), repeat)
    t_update, r = _best(lambda: api.update(p, notify=False), repeat)
    assert r.get("nothing_to_do"), r
    t_update_full, _ = _best(lambda: api.update(p, notify=False, full_compare=True), repeat)
    d = ["--project", str(root)]
    c_status = _cli(["status", *d], repeat)
    c_status_full = _cli(["status", "--full-compare", *d], repeat)
    c_update = _cli(["update", *d], repeat)
    c_update_full = _cli(["update", "--full-compare", *d], repeat)
    print(f"\n{label} (seed {seed_s:.1f} s)")
    print(f"{'':28} {'shortcut s':>10} {'full s':>8} {'ratio':>7}")
    for name, a, b in (
        ("status (library)", t_status, t_status_full),
        ("update (library)", t_update, t_update_full),
        ("tiledelta status (CLI)", c_status, c_status_full),
        ("tiledelta update (CLI)", c_update, c_update_full),
    ):
        print(f"{name:28} {a:10.3f} {b:8.3f} {b / a:6.1f}×")


def hash_cost(mb: int) -> None:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(os.urandom(mb << 20))
        path = f.name
    try:
        for algo in ("blake2b", "sha256"):

            def once(a: str = algo) -> None:
                with open(path, "rb") as fh:
                    hashlib.file_digest(fh, a)

            s, _ = _best(once, 3)
            print(f"{algo:8} {s / mb * 100:.3f} s per 100 MB (file of {mb} MB, page cache warm)")
    finally:
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="0-12")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hash-mb", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = make_project(Path(tmp) / "x1", args.levels)
        measure(one, "1× (23,953 buildings, shapefile)", args.repeat)
        ten = copies_project(Path(tmp) / f"x{args.copies}", args.levels, args.copies)
        size = sum(f.stat().st_size for f in ten.glob("buildings.gpkg*")) / 1e6
        measure(ten, f"{args.copies}× (GeoPackage, {size:.0f} MB)", args.repeat)
    print()
    hash_cost(args.hash_mb)


if __name__ == "__main__":
    main()
