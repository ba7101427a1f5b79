"""`[cache] blank_tiles = "store"`: background-only tiles kept over the extent, once per bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from tiledelta import sample
from tiledelta.api import load_project, seed, update
from tiledelta.grid import tile_range
from tiledelta.project import Project
from tiledelta.stores import open_project_store
from tiledelta.stores.compact import parse_bundle_index


def _configure(root: Path) -> tuple:
    p = Project.load(root)
    b = (sample.X0 - 900, sample.Y0 - 500, sample.X0 + 3000, sample.Y0 + 2600)
    p = p.updated(render={"extent": b})
    p = p.updated(cache={"blank_tiles": "store"})
    p.save()
    return b


def _tiles(root: Path) -> dict:
    with open_project_store(Project.load(root), create=False) as s:
        return {a: s.get(*a) for a in s.iter_tiles()}


def test_blank_tiles_cover_the_extent_and_survive_updates(
    sample_project: Path, tmp_path: Path
) -> None:
    _configure(sample_project)
    project = load_project(sample_project)
    result = seed(project)
    assert result["tiles_blank_stored"] > 0
    tiles = _tiles(sample_project)
    for level in project.levels:
        r0, r1, c0, c1 = tile_range(project.scheme, level, project.extent, touch=False)
        want = {(level, r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
        assert want <= {a for a in tiles if a[0] == level}
    # All blank tiles are the same bytes, and a bundle stores them once.
    blank, copies = Counter(tiles.values()).most_common(1)[0]
    assert copies > 10 and copies >= result["tiles_blank_stored"]
    bundle = max(
        (sample_project / "cache" / "_alllayers").rglob("*.bundle"), key=lambda p: p.stat().st_size
    )
    raw = bundle.read_bytes()
    index = parse_bundle_index(raw[: 64 + 8 * 128 * 128])
    offsets = index[index >> np.uint64(40) > 0] & np.uint64((1 << 40) - 1)
    assert len(np.unique(offsets)) < len(offsets)  # shared copies

    sample.apply_edits(sample_project)
    update(load_project(sample_project))
    fresh = tmp_path / "fresh"
    shutil.copytree(sample_project, fresh, ignore=shutil.ignore_patterns("cache", ".tiledelta"))
    seed(load_project(fresh))
    assert _tiles(sample_project) == _tiles(fresh)


def test_store_without_extent_is_refused(sample_project: Path) -> None:
    toml = sample_project / "tiledelta.toml"
    text = toml.read_text().replace('blank_tiles = "skip"', 'blank_tiles = "store"')
    toml.write_text(text, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "tiledelta.cli", "seed", "--project", str(sample_project)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "render.extent" in out.stderr and len(out.stderr.strip().splitlines()) == 1
