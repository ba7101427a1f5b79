"""How a snapshot is read back: fingerprints at once, keys and boxes when first used (in
the read transaction the snapshot was loaded in), boxes of chosen rows without the others,
and the multiset diff's bucketed sort; what they give equals reading everything whole.

The client of a distributed detection holds the new side of every layer; these reads are
what keeps the old side from doubling it (docs/dask.md, "Measured")."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support.layers import layer

from tiledelta.api import load_project
from tiledelta.change import diff, record_build, snapshot
from tiledelta.change.snapshot import load_snapshot
from tiledelta.project import Project
from tiledelta.sources import LayerData


def _layer(name: str, fps: np.ndarray, boxes: np.ndarray, keys: np.ndarray) -> LayerData:
    return layer(name, keys=keys, fingerprints=fps, bounds=boxes)


def _random_layer(project: Project, n: int, seed: int) -> LayerData:
    rng = np.random.default_rng(seed)
    name = project.style.layers[0].name
    return _layer(
        name,
        rng.integers(0, 2**64, n, dtype=np.uint64),
        rng.random((n, 4)),
        rng.permutation(n).astype(np.int64),
    )


@pytest.fixture
def project(sample_project: Path) -> Project:
    return load_project(sample_project)


def test_rows_read_in_stretches_equal_the_whole_array(project, monkeypatch):
    """``bounds_at`` over pieces of 1,000 bytes and gaps of 3 rows gives ``bounds[idx]``:
    unsorted, repeated, first and last rows, a dense run, nothing, everything."""
    data = _random_layer(project, 5000, 1)
    record_build(project, {data.name: data}, project.levels, kind="seed")
    monkeypatch.setattr(snapshot, "BLOB_PIECE", 1000)
    monkeypatch.setattr(snapshot, "ROW_GAP", 3)
    rng = np.random.default_rng(2)
    cases = [
        np.zeros(0, dtype=np.int64),
        np.array([0]),
        np.array([4999]),
        np.array([4999, 0, 17, 17, 2500]),
        rng.integers(0, 5000, 300),
        np.arange(1200, 3100),
        np.concatenate([np.arange(10, 40), rng.integers(0, 5000, 50), np.arange(4990, 5000)]),
        rng.permutation(5000),
    ]
    for idx in cases:
        layer = load_snapshot(project).layers[data.name]
        got = layer.bounds_at(idx)
        want = data.bounds[idx]
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.array_equal(got, want)
        assert np.array_equal(layer.bounds, data.bounds)  # then read whole: the same
        assert np.array_equal(layer.bounds_at(idx), want)
    with pytest.raises(IndexError):
        load_snapshot(project).layers[data.name].bounds_at(np.array([5000]))


def test_later_reads_see_the_snapshot_that_was_loaded(project):
    """Keys and boxes read after another build recorded a new snapshot are still the
    loaded snapshot's (one read transaction), matching its fingerprints."""
    first = _random_layer(project, 3000, 3)
    record_build(project, {first.name: first}, project.levels, kind="seed")
    loaded = load_snapshot(project)
    assert loaded is not None
    second = _random_layer(project, 2000, 4)
    record_build(project, {second.name: second}, project.levels, kind="update")
    layer = loaded.layers[first.name]
    assert np.array_equal(layer.fingerprints, first.fingerprints)
    assert np.array_equal(layer.bounds_at(np.array([5, 2999])), first.bounds[[5, 2999]])
    assert np.array_equal(layer.keys, first.keys)
    assert np.array_equal(layer.bounds, first.bounds)
    assert len(layer) == 3000
    now = load_snapshot(project)
    assert now is not None
    assert np.array_equal(now.layers[first.name].bounds, second.bounds)
    assert np.array_equal(now.layers[first.name].keys, second.keys)


def test_multiset_diff_reads_no_whole_old_side_but_its_fingerprints(project, monkeypatch):
    """Diffing 400,000 features against a stored snapshot allocates less than half of the old
    boxes (12.8 MB): only the old places of the changed features are read. The
    result equals the diff against the snapshot read whole."""
    n = 400_000
    data = _random_layer(project, n, 5)
    record_build(project, {data.name: data}, project.levels, kind="seed")
    fps = data.fingerprints.copy()
    fps[::1000] ^= np.uint64(1)  # 400 features edited
    new = _layer(data.name, fps, data.bounds, data.keys)
    monkeypatch.setattr(diff, "CHUNK", 1 << 15)  # buckets and chunks of 32,768 rows
    monkeypatch.setattr(snapshot, "BLOB_PIECE", 1 << 20)  # reads of at most 1 MB
    old = load_snapshot(project).layers[data.name]
    tracemalloc.start()
    try:
        change = diff.diff_layer(old, new, keyed=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < data.bounds.nbytes / 2, peak
    whole = load_snapshot(project).layers[data.name]
    _ = (whole.bounds, whole.keys)  # read whole first: the in-memory path
    ref = diff.diff_layer(whole, new, keyed=False)
    assert (change.added, change.deleted, change.reordered) == (400, 400, 0)
    for f in ("old_boxes", "new_boxes", "new_idx", "moved_boxes"):
        assert np.array_equal(getattr(change, f), getattr(ref, f)), f
    assert np.array_equal(change.old_boxes, data.bounds[::1000])


def test_bucketed_surplus_equals_sorting_whole_sides(monkeypatch):
    """The surplus of each side, bucket by bucket of the top bits, equals the surplus of
    the whole sorted sides and a Counter's, with values on every bucket edge, repeats
    across sides and one side empty."""
    rng = np.random.default_rng(6)
    edges = np.array(
        [0, 1, 2**56 - 1, 2**56, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=np.uint64
    )
    base = np.concatenate([rng.integers(0, 2**64, 400, dtype=np.uint64), edges, edges])
    cases = [
        (base, np.concatenate([base[5:], edges[:3], rng.integers(0, 2**64, 30, dtype=np.uint64)])),
        (base, base[rng.permutation(len(base))]),
        (np.repeat(edges, 3), np.repeat(edges, 2)),
        (base, base[:0]),
        (base[:0], base),
    ]
    for ofp, nfp in cases:
        so, sn = np.sort(ofp), np.sort(nfp)
        want = diff._surplus(so, sn), diff._surplus(sn, so)
        monkeypatch.setattr(diff, "CHUNK", 7)  # 2**6 buckets for 416 values
        got = diff._surpluses(ofp, nfp)
        monkeypatch.undo()
        oc, nc = Counter(ofp.tolist()), Counter(nfp.tolist())
        for side, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.dtype == w.dtype and np.array_equal(g, w)
            a, b = (oc, nc) if side == 0 else (nc, oc)
            assert sorted((a - b).elements()) == g.tolist()
