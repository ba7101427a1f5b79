"""A seed killed half-way and resumed, against a full seed: Clatsop buildings.

    .venv/bin/python bench/bench_resume.py [--levels 0-16] [--processes 2] [--at 0.5]

Runs ``tiledelta seed`` as a command three times on copies of one project: a full seed
(timed); a seed SIGKILLed (its process group) once ``--at`` of its meta-tiles are
journaled; and the resuming seed (timed). Prints both times, what the resumed run drew,
and whether its cache is byte-identical to the full seed's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import make_project

from tiledelta.change.journal import SEED_JOURNAL, SeedJournal

TILEDELTA = str(Path(sys.executable).with_name("tiledelta"))


def files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def journaled(project: Path) -> int:
    """Meta-tiles the running seed has journaled as finished (read only)."""
    _signature, done = SeedJournal.peek(project / ".tiledelta" / SEED_JOURNAL)
    return sum(done.values())


def timed_seed(project: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    out = subprocess.run(
        [TILEDELTA, "seed", "--json", "--project", str(project)], capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr)
    return time.perf_counter() - t, json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--levels", default="0-16")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--at", type=float, default=0.5, help="kill at this share of meta-tiles")
    args = ap.parse_args()

    from tiledelta.api import load_project

    with tempfile.TemporaryDirectory() as tmp:
        full = make_project(Path(tmp) / "full" / "clatsop", args.levels)
        load_project(full).updated(render={"processes": args.processes}).save()
        killed = Path(tmp) / "killed" / "clatsop"
        shutil.copytree(full, killed)

        full_s, full_sum = timed_seed(full)
        total = full_sum["metatiles_rendered"]

        proc = subprocess.Popen(
            [TILEDELTA, "seed", "--project", str(killed)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        t = time.perf_counter()
        while proc.poll() is None and journaled(killed) < args.at * total:
            time.sleep(0.02)
        done = journaled(killed)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_s = time.perf_counter() - t

        resume_s, resumed = timed_seed(killed)
        same = files(load_project(full).cache_path) == files(load_project(killed).cache_path)
        before = resumed.get("resumed", {}).get("metatiles_done_before", 0)
        print(f"levels {args.levels}, {args.processes} processes, {total:,} meta-tiles")
        print(f"full seed:                 {full_s:6.2f} s")
        print(f"killed (SIGKILL) after:    {killed_s:6.2f} s, {done:,} meta-tiles journaled")
        print(
            f"resume after {args.at:.0%}:         {resume_s:6.2f} s, "
            f"{resumed['metatiles_rendered']:,} meta-tiles rendered ({before:,} kept)"
        )
        print(f"resumed cache byte-identical to the full seed: {same}")


if __name__ == "__main__":
    main()
