"""Layers proven unchanged since the last build: their files hold the same bytes.

With the snapshot, each file-backed layer's inputs are recorded (table ``layer_inputs``,
same transaction): how it is read (a digest of the datasource, the attributes the style
uses, its filter, the key, the scheme's CRS and extent, the reader's versions) and, per
file of its dataset, the size, mtime and SHA-256 hash of the bytes it was read from
(``sources/files.py``). Detection hashes the files again: a layer whose read signature
and files' sizes and hashes are all equal reads to the same features as the snapshot's,
so it is neither fingerprinted nor diffed, and when every layer is so, nothing is read.
PostGIS layers, GDAL virtual paths and formats whose companion files are not known
always take the full comparison. docs/detection.md says what this trusts.
"""

from __future__ import annotations

import sqlite3

from tiledelta.project import Project
from tiledelta.sources import LayerData
from tiledelta.sources import files as source_files
from tiledelta.sources.types import LayerInputs

SCHEMA = """
CREATE TABLE IF NOT EXISTS layer_inputs (
    layer TEXT PRIMARY KEY, inputs TEXT NOT NULL
);
"""

#: What ``status`` says of a layer proven unchanged.
UNCHANGED_FILES = "unchanged (files)"


def record_inputs(con: sqlite3.Connection, layers: dict[str, LayerData]) -> None:
    """Replace the ``layer_inputs`` rows with those of ``layers`` (in the caller's
    transaction); a layer read without a proof (``inputs`` None) gets no row."""
    con.execute("DELETE FROM layer_inputs")
    con.executemany(
        "INSERT INTO layer_inputs VALUES (?, ?)",
        [(name, d.inputs.to_json()) for name, d in layers.items() if d.inputs is not None],
    )


def recorded_inputs(con: sqlite3.Connection) -> dict[str, LayerInputs]:
    """The inputs the last build recorded, per layer."""
    out = {}
    for name, text in con.execute("SELECT layer, inputs FROM layer_inputs"):
        inputs = LayerInputs.from_json(text)
        if inputs is not None:
            out[name] = inputs
    return out


def observe_layers(project: Project, names: set[str] | None = None) -> dict[str, LayerInputs]:
    """The inputs now (stat and hash) of the file-backed vector layers of ``project``
    (those in ``names``, if given)."""
    out = {}
    crs, valid = project.scheme.crs, project.scheme.extent
    for src in project.style.layers:
        if src.kind not in ("shape", "ogr", "sqlite", "geojson"):
            continue
        if names is not None and src.name not in names:
            continue
        inputs = source_files.observe(src, crs, project.key_field(src.name), valid)
        if inputs is not None:
            out[src.name] = inputs
    return out


def proven_unchanged(
    project: Project,
    recorded: dict[str, LayerInputs],
    layers: dict[str, LayerData] | None = None,
) -> dict[str, LayerInputs]:
    """The layers whose inputs equal those ``recorded`` by the last build, with their
    inputs; empty when ``[update] trust_unchanged_files`` is off. With ``layers`` (read
    already), each layer's own ``inputs`` (hashed before it was read, unwritten during
    the read) are compared, so a proof always speaks of the very bytes read; without,
    the files are stat'ed and hashed now."""
    if not project.config.update.trust_unchanged_files or not recorded:
        return {}
    if layers is not None:
        now = {n: d.inputs for n, d in layers.items() if d.inputs is not None and n in recorded}
    else:
        now = observe_layers(project, set(recorded))
    return {
        name: inputs
        for name, inputs in now.items()
        if source_files.same_bytes(recorded[name], inputs) is None
    }
