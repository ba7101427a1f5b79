"""How a snapshot is recorded: each array written into its blob in pieces, byte for byte
what the previous writer stored (``np.save`` of the whole array, object keys converted
first), in one transaction that a failure leaves as it was.

Older state databases and the readers (``_read_blob``, ``_read_rows``) rely on those
bytes; the pieces are what keep a record from holding every array again as bytes
(docs/dask.md, "Measured")."""

from __future__ import annotations

import io
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support.layers import layer

from tiledelta.api import load_project
from tiledelta.change import record_build, snapshot
from tiledelta.change.snapshot import load_snapshot, state_db
from tiledelta.project import Project
from tiledelta.sources import LayerData


def _old_pack(a: np.ndarray) -> bytes:
    """The writer before pieces, verbatim: the bytes every stored array must keep."""
    buf = io.BytesIO()
    if a.dtype == object:
        a = a.astype(np.int64) if all(isinstance(v, int | np.integer) for v in a) else a.astype(str)
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _layer(name: str, keys, fps, bounds) -> LayerData:
    return layer(name, keys=keys, fingerprints=fps, bounds=bounds)


def _stored(project: Project) -> dict[str, tuple[bytes, bytes, bytes]]:
    con = sqlite3.connect(state_db(project))
    try:
        rows = con.execute("SELECT name, keys, fps, bounds FROM layers").fetchall()
    finally:
        con.close()
    return {name: (k, f, b) for name, k, f, b in rows}


N = 1001
_rng = np.random.default_rng(7)
_fps = _rng.integers(0, 2**64, N, dtype=np.uint64)
_boxes = _rng.random((N, 4)) * 1e6
_words = np.array(
    [f"k{i}" for i in range(N - 3)] + [None, 1.5, "größer-als-alle-anderen-" * 3], dtype=object
)

#: (keys, fingerprints, boxes): every dtype and layout the writer takes a path for
CASES = {
    "int64 ids, C boxes": (np.arange(N, dtype=np.int64), _fps, _boxes),
    "object ints (Python, numpy, bool)": (
        np.array([int(i) if i % 3 else np.int32(i) for i in range(N - 1)] + [True], object),
        _fps,
        _boxes,
    ),
    "object text, widest last": (_words, _fps, _boxes),
    "strided keys, big-endian fps, float32 boxes": (
        np.arange(2 * N, dtype=np.int64)[::2],
        _fps.astype(">u8"),
        _boxes.astype(np.float32),
    ),
    "Fortran boxes": (np.arange(N, dtype=np.int64), _fps, np.asfortranarray(_boxes)),
    "Fortran float32 boxes": (_words, _fps, np.asfortranarray(_boxes.astype(np.float32))),
    "strided boxes": (np.arange(N), _fps, np.ascontiguousarray(np.hstack([_boxes] * 2))[:, ::2]),
    "object boxes, fixed-width text keys": (
        _words.astype(str),
        _fps,
        np.array(_boxes.tolist(), dtype=object),
    ),
    "empty": (np.array([], dtype=object), np.zeros(0, np.uint64), np.zeros((0, 4))),
}


@pytest.fixture
def project(sample_project: Path) -> Project:
    return load_project(sample_project)


@pytest.mark.parametrize("piece", [1 << 24, 1000, 7])
@pytest.mark.parametrize("case", list(CASES))
def test_stored_bytes_are_the_previous_writers(project, monkeypatch, case, piece):
    """The blobs hold exactly what the previous writer stored for the same layer (keys as
    given, fingerprints as given, boxes as float64), whatever the piece size; the snapshot
    reads back the arrays those bytes hold."""
    keys, fps, boxes = CASES[case]
    monkeypatch.setattr(snapshot, "BLOB_PIECE", piece)
    monkeypatch.setattr(snapshot, "TEXT_ROWS", 3)
    name = project.style.layers[0].name
    record_build(project, {name: _layer(name, keys, fps, boxes)}, project.levels, kind="seed")
    want = (
        _old_pack(np.asarray(keys)),
        _old_pack(fps),
        _old_pack(np.asarray(boxes, dtype=np.float64)),
    )
    assert _stored(project)[name] == want
    snap = load_snapshot(project)
    assert snap is not None
    layer = snap.layers[name]
    for got, stored in zip((layer.keys, layer.fingerprints, layer.bounds), want, strict=True):
        ref = np.load(io.BytesIO(stored), allow_pickle=False)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref)
    idx = np.array([0, N // 2, N - 1]) if len(fps) else np.zeros(0, np.int64)
    ref = np.load(io.BytesIO(want[2]), allow_pickle=False)
    assert np.array_equal(load_snapshot(project).layers[name].bounds_at(idx), ref[idx])


def test_several_layers_and_what_the_readers_see(project):
    """Two layers in one record: each row's blobs are its own, and rows read by
    ``bounds_at`` in small stretches equal the whole array."""
    names = [lyr.name for lyr in project.style.layers][:2]
    a = _layer(names[0], np.arange(N), _fps, _boxes)
    b = _layer(names[1], _words, _fps[::-1].copy(), _boxes[::-1].copy())
    record_build(project, {names[0]: a, names[1]: b}, project.levels, kind="seed")
    stored = _stored(project)
    for d in (a, b):
        assert stored[d.name] == (
            _old_pack(np.asarray(d.keys)),
            _old_pack(d.fingerprints),
            _old_pack(d.bounds),
        )
        layer = load_snapshot(project).layers[d.name]
        assert np.array_equal(layer.bounds_at(np.arange(0, N, 5)), d.bounds[::5])
        assert np.array_equal(layer.keys, np.asarray(d.keys).astype(layer.keys.dtype))


def _bad_boxes() -> np.ndarray:
    boxes = np.array(_boxes.tolist(), dtype=object)
    boxes[N - 1, 2] = "not a number"  # found only in the last piece
    return boxes


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: _layer("b", np.arange(N), _fps, _bad_boxes()), id="box not a number"),
        pytest.param(
            lambda: _layer("b", np.array([1] * (N - 1) + [2**70], object), _fps, _boxes),
            id="key past int64",
        ),
    ],
)
def test_a_record_that_fails_midway_leaves_the_previous_snapshot(project, monkeypatch, bad):
    """A record that fails after its first layer and part of the second are written (a
    box that is not a number in the last piece, a key past int64) changes nothing: the
    previous snapshot, its signature and the run history are as they were."""
    name = project.style.layers[0].name
    first = _layer(name, np.arange(N), _fps, _boxes)
    record_build(project, {name: first}, project.levels, kind="seed")
    before = _stored(project)
    signature = load_snapshot(project).signature
    con = sqlite3.connect(state_db(project))
    runs = con.execute("SELECT count(*) FROM runs").fetchone()
    con.close()
    monkeypatch.setattr(snapshot, "BLOB_PIECE", 4096)  # the bad row comes pieces later
    again = _layer("a", np.arange(N), _fps[::-1].copy(), _boxes + 1)
    with pytest.raises((ValueError, OverflowError)):
        record_build(project, {"a": again, "b": bad()}, [0, 1], kind="update")
    assert _stored(project) == before
    snap = load_snapshot(project)
    assert snap is not None and snap.signature == signature and list(snap.layers) == [name]
    assert np.array_equal(snap.layers[name].bounds, _boxes)
    con = sqlite3.connect(state_db(project))
    assert con.execute("SELECT count(*) FROM runs").fetchone() == runs
    con.close()


def test_recording_holds_no_second_copy_of_the_arrays(project, monkeypatch):
    """Recording 400,000 features (19.2 MB of keys, fingerprints and boxes, the boxes as
    float32 to be stored as float64) allocates less than a quarter of that: pieces of
    1 MB, not ``_pack``'s copy, its ``BytesIO`` and ``bytes``."""
    n = 400_000
    rng = np.random.default_rng(3)
    name = project.style.layers[0].name
    data = _layer(
        name,
        np.arange(n, dtype=np.int64),
        rng.integers(0, 2**64, n, dtype=np.uint64),
        rng.random((n, 4)).astype(np.float32),
    )
    monkeypatch.setattr(snapshot, "BLOB_PIECE", 1 << 20)
    tracemalloc.start()
    try:
        record_build(project, {name: data}, project.levels, kind="seed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 19_200_000 / 4, f"{peak:,} bytes at peak"
    layer = load_snapshot(project).layers[name]
    assert np.array_equal(layer.bounds, data.bounds.astype(np.float64))
