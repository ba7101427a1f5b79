"""The files a layer is read from, and what proves they hold the same bytes as before.

A file-backed vector layer's :class:`~tiledelta.sources.types.LayerData` is a function of
its dataset's bytes and of how it is read (the style's datasource, the attributes it
uses, its filter, the key, the scheme's CRS and extent, the reader's versions). So when
every file of the dataset has the same content hash as at the last build, and the read
signature is the same, the layer's features are the snapshot's: detection need neither
read nor diff them (``change/unchanged.py``, docs/detection.md says what that trusts).

The hash (SHA-256, :func:`hashlib.file_digest`) is taken *before* the features are read,
and the files are stat'ed again after: a write in between (a new size, mtime or ctime)
drops the proof, and so does a file changed less than :data:`RACY_SECONDS` before the
hash (a write in the same timestamp tick could keep its ctime). Every file is hashed on
every detection (within one process, a file whose stat is unchanged is hashed once).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from tiledelta.grid import Bounds
from tiledelta.sources.types import HASH, MAX_TEXT_CHARS, FileState, LayerInputs
from tiledelta.style import LayerSource

#: A file whose ctime is this recent (seconds) when hashed gets no proof (FAT's mtime has a
#: 2 s tick; Linux's timestamps a jiffy): a write in the same tick might not show in its stat.
RACY_SECONDS = 2.0
#: Bumped when what a layer's features are made of changes without the inputs changing.
READ_FORMAT = 1

#: Suffixes of single-file databases, whose ``-wal`` (and rollback ``-journal``) hold
#: committed rows not yet in the file.
_SQLITE = {".gpkg", ".sqlite", ".sqlite3", ".db"}
_SINGLE = {".geojson", ".json", ".geojsonl", ".geojsons", ".fgb"}


def dataset_files(src: LayerSource) -> list[Path] | None:
    """Every file a layer's dataset is made of, or None when that cannot be told (a
    database server, a GDAL virtual path, a format whose companions are not known).

    Shapefile: every file named like the ``.shp`` with another suffix (``.shx``, ``.dbf``,
    ``.prj``, ``.cpg``, ``.qix``, ``.sbn``…); GeoPackage/SQLite: the file and its ``-wal``
    and ``-journal`` when present; a FileGDB (a ``.gdb`` folder): every file in it;
    GeoJSON, FlatGeobuf: the file."""
    if src.kind == "postgis" or src.path.startswith(("PG:", "/vsi")) or "://" in src.path:
        return None
    p = Path(src.path)
    try:
        if p.is_dir():
            if p.suffix.lower() != ".gdb":
                return None
            return sorted(f for f in p.rglob("*") if f.is_file())
        if not p.is_file():
            return None
        suffix = p.suffix.lower()
        if suffix == ".shp":
            prefix = p.stem.lower() + "."
            return sorted(
                f for f in p.parent.iterdir() if f.name.lower().startswith(prefix) and f.is_file()
            )
        if suffix in _SQLITE:
            extra = [Path(f"{p}{tail}") for tail in ("-wal", "-journal")]
            return [p] + [f for f in extra if f.is_file()]
        if suffix in _SINGLE:
            return [p]
    except OSError:
        return None
    return None


def read_signature(src: LayerSource, target_crs: str, key: str | None, valid: Bounds | None) -> str:
    """A digest of everything besides the files' bytes that decides the layer's features."""
    import pyogrio

    from tiledelta import __version__

    what = {
        "read_format": READ_FORMAT,
        "tiledelta": __version__,
        "gdal": pyogrio.__gdal_version_string__,
        "pyogrio": pyogrio.__version__,
        "kind": src.kind,
        "path": src.path,
        "layer": src.layer,
        "srs": src.srs,
        "attributes": list(src.attributes),
        "where": src.where,
        "params": sorted(src.params.items()),
        "key": key,
        "crs": target_crs,
        "valid": list(valid) if valid is not None else None,
        "max_text": MAX_TEXT_CHARS,
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_GDAL_ENV)},
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


#: Environment variables that change what GDAL reads (encodings, shapefile options).
_GDAL_ENV = ("SHAPE_", "OGR_", "GDAL_", "CPL_")

#: what this process hashed: files and bytes (for benchmarks and tests)
HASHED = {"files": 0, "bytes": 0}

#: digests of files hashed by this process, by (path, size, mtime_ns, ctime_ns, inode)
_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def observe(
    src: LayerSource, target_crs: str, key: str | None, valid: Bounds | None
) -> LayerInputs | None:
    """Stat and hash every file of ``src``'s dataset (before its features are read); None
    when the dataset's files cannot be told or one was changed too recently to trust."""
    paths = dataset_files(src)
    if not paths:
        return None
    now = time.time_ns()
    racy = now - int(RACY_SECONDS * 1e9)
    states = []
    try:
        for f in paths:
            st = f.stat()
            if max(st.st_ctime_ns, st.st_mtime_ns) > racy:
                return None
            memo = (str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            digest = _DIGESTS.get(memo)
            if digest is None:
                if len(_DIGESTS) > 4096:  # a long watch: forget old states
                    _DIGESTS.clear()
                with open(f, "rb") as fh:
                    digest = hashlib.file_digest(fh, HASH).hexdigest()
                _DIGESTS[memo] = digest
                HASHED["files"] += 1
                HASHED["bytes"] += st.st_size
            states.append(
                FileState(str(f), st.st_size, st.st_mtime_ns, digest, st.st_ctime_ns, st.st_ino)
            )
    except OSError:
        return None
    sig = read_signature(src, target_crs, key, valid)
    inputs = LayerInputs(sig, tuple(states))
    return inputs if still_same(src, inputs) else None


def still_same(src: LayerSource, inputs: LayerInputs) -> bool:
    """Whether ``src``'s files are still those ``inputs`` hashed: the same files, none
    written since (size, mtime, ctime and inode as then)."""
    paths = dataset_files(src)
    if paths is None or [str(p) for p in paths] != [f.path for f in inputs.files]:
        return False
    try:
        return all(
            (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == f.stat_key()
            for f, st in ((f, Path(f.path).stat()) for f in inputs.files)
        )
    except OSError:
        return False


def same_bytes(recorded: LayerInputs, now: LayerInputs) -> str | None:
    """None when ``now`` proves the layer is read as at ``recorded``, else what differs."""
    if recorded.signature != now.signature:
        return "how the layer is read changed (style datasource, fields, filter, key, versions)"
    old = {f.path: f for f in recorded.files}
    new = {f.path: f for f in now.files}
    if set(old) != set(new):
        return "its dataset has other files"
    for path, f in new.items():
        if f.size != old[path].size:
            return f"{path}: another size"
        if f.digest != old[path].digest:
            return f"{path}: other bytes"
    return None
