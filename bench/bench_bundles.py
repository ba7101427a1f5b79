"""Compact bundle rewrites and the before store, as an update pays them (issue 13).

    .venv/bin/python bench/bench_bundles.py [--bundles 8 34] [--tiles 1500] [--repeat 5]

A compact cache of ``--bundles`` bundles, each holding ``--tiles`` distinct tiles (2-10 kB
of random bytes) and 4,000 index records sharing one blank tile; then an update's writes:
4 tiles replaced per bundle,

- one ``put_many`` per bundle (what the render pool does: each bundle is flushed when its
  meta-tiles are drawn), and
- one ``put_many`` for every bundle (a batch: temp files written and fsynced, then renamed,
  one folder fsync);

best of ``--repeat``, with and without fsync (``os.fsync`` made a no-op: what the syncs
cost). Then the before store: ``BeforeTiles`` taking one call per bundle of the tiles
replaced (100 tiles of 5 kB per call), and ``move_to``.

Run it against another checkout's sources with ``PYTHONPATH=that/src`` to compare.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _tile(rng: np.random.Generator) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + rng.bytes(int(rng.integers(2000, 10000)))


def _cache(root: Path, nb: int, ntiles: int, rng: np.random.Generator):
    from tiledelta.grid import web_mercator
    from tiledelta.stores import open_store

    store = open_store("compact", root, web_mercator(16))
    blank = _tile(rng)
    for b in range(nb):
        r0, c0 = 128 * (b // 8), 128 * (b % 8)
        pos = rng.choice(128 * 128, ntiles + 4000, replace=False)
        tiles = [(16, r0 + p // 128, c0 + p % 128, _tile(rng)) for p in pos[:ntiles]]
        tiles += [(16, r0 + p // 128, c0 + p % 128, blank) for p in pos[ntiles:]]
        store.put_many(tiles)
    return store


def _edits(nb: int, rng: np.random.Generator) -> list[list]:
    out = []
    for b in range(nb):
        r0, c0 = 128 * (b // 8), 128 * (b % 8)
        out.append([(16, r0 + i, c0 + i, _tile(rng)) for i in range(4)])
    return out


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bundles(nb: int, ntiles: int, repeat: int) -> None:
    rng = np.random.default_rng(nb)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        store = _cache(Path(tmp) / "c", nb, ntiles, rng)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.bundle")) / nb / 1e6
        edits = _edits(nb, rng)
        real = os.fsync
        for sync in (True, False):
            if not sync:
                os.fsync = lambda fd: None
            try:
                one = _best(lambda: [store.put_many(e) for e in edits], repeat)
                batch = _best(lambda: store.put_many([t for e in edits for t in e]), repeat)
            finally:
                os.fsync = real
            what = "with fsync   " if sync else "fsync a no-op"
            print(
                f"{nb:>3} bundles ({size:.1f} MB each) {what}: one put_many per bundle "
                f"{one:6.3f} s, one for all {batch:6.3f} s"
            )
        store.close()


def before_store(calls: int, repeat: int) -> None:
    from tiledelta.project import Project
    from tiledelta.runs.folder import BeforeTiles

    rng = np.random.default_rng(1)
    items = [[((16, i, j), rng.bytes(5000)) for j in range(100)] for i in range(calls)]

    class _P:  # what BeforeTiles reads of a project
        def __init__(self, d: Path) -> None:
            self.state_dir = d

    def once() -> None:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
            bt = BeforeTiles(_P(Path(tmp) / ".tiledelta"))  # type: ignore[arg-type]
            for it in items:
                bt(it)
            (Path(tmp) / "run").mkdir()
            bt.move_to(Path(tmp) / "run")

    _ = Project  # the real type, for readers
    print(f"before store, {calls} calls of 100 tiles: {_best(once, repeat):6.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundles", type=int, nargs="+", default=[8, 34])
    ap.add_argument("--tiles", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for nb in args.bundles:
        bundles(nb, args.tiles, args.repeat)
    for nb in args.bundles:
        before_store(nb, args.repeat)


if __name__ == "__main__":
    main()
