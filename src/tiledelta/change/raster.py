"""Raster layers in the snapshot: one row per physical file, and what changed per file.

The blocks themselves are rows of the layer's snapshot like features (key, fingerprint,
box; :mod:`tiledelta.sources.raster`), so the diff, the plan and the exact filter need
nothing raster-specific. This module keeps, beside them, each file's size, modification
time, header (georeferencing, size, bands, nodata, colour tables) and block fingerprints
(table ``raster_files``): what ``trust_mtime`` reuses, and what :func:`file_changes`
compares to say which files of a mosaic were added, replaced, changed or removed.

The table is new in this version and created when absent; a snapshot written before it
simply has no rows (no raster layer could be in it), so the snapshot format is unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import numpy as np

from tiledelta.sources import LayerData, RasterLayerData

SCHEMA = """
CREATE TABLE IF NOT EXISTS raster_files (
    layer TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    meta TEXT NOT NULL, digest TEXT NOT NULL, fps BLOB NOT NULL,
    PRIMARY KEY (layer, path)
);
"""


def record_raster_files(con: sqlite3.Connection, layers: dict[str, LayerData]) -> None:
    """Replace the ``raster_files`` rows with those of ``layers`` (inside the caller's
    transaction)."""
    con.execute("DELETE FROM raster_files")
    rows = []
    for name, data in layers.items():
        if not isinstance(data, RasterLayerData):
            continue
        fps = np.asarray(data.fingerprints, dtype=np.uint64)
        for f in data.files:
            rows.append(
                (
                    name,
                    f.path,
                    f.size,
                    f.mtime_ns,
                    json.dumps(f.meta),
                    f.digest,
                    fps[f.first : f.first + f.count].tobytes(),
                )
            )
    con.executemany("INSERT INTO raster_files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


@dataclass(frozen=True)
class FileChange:
    """One raster file that differs from the last build."""

    layer: str
    path: str
    what: str  # added | removed | replaced (new header) | changed (some blocks)
    blocks: int  # blocks whose fingerprint differs (all of them when added/removed/replaced)


def load_raster_files(con: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, np.ndarray]]:
    """(layer, path) → (header digest, block fingerprints) of the last build."""
    return {
        (layer, path): (digest, np.frombuffer(fps, dtype=np.uint64))
        for layer, path, digest, fps in con.execute(
            "SELECT layer, path, digest, fps FROM raster_files"
        )
    }


def file_changes(
    old: dict[tuple[str, str], tuple[str, np.ndarray]], layers: dict[str, LayerData]
) -> list[FileChange]:
    """Per raster file: added, removed, replaced (its header changed) or changed blocks."""
    out: list[FileChange] = []
    seen: set[tuple[str, str]] = set()
    for name, data in layers.items():
        if not isinstance(data, RasterLayerData):
            continue
        fps = np.asarray(data.fingerprints, dtype=np.uint64)
        for f in data.files:
            key = (name, f.path)
            seen.add(key)
            new = fps[f.first : f.first + f.count]
            if key not in old:
                out.append(FileChange(name, f.path, "added", f.count))
                continue
            digest, ofps = old[key]
            if digest != f.digest or len(ofps) != len(new):
                out.append(FileChange(name, f.path, "replaced", f.count))
            elif (n := int((ofps != new).sum())) > 0:
                out.append(FileChange(name, f.path, "changed", n))
    layer_names = {n for n, d in layers.items() if isinstance(d, RasterLayerData)}
    for (name, path), (_d, ofps) in old.items():
        if (name, path) not in seen and name in layer_names:
            out.append(FileChange(name, path, "removed", len(ofps)))
    return out
