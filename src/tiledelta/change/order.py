"""Draw order: which unchanged features changed their place in the layer's order.

Mapnik draws a layer's features in the order its datasource gives them, and tiledelta
gives them in the dataset's own order (:mod:`tiledelta.sources`). So rewriting a layer
with the same rows in another order (a truncate-and-append reload, an export without
ORDER BY, a cut and paste) can change overlaps, label collisions and shared edges
without changing any feature. This module finds the features whose relative order
changed; the plan then checks, meta-tile by meta-tile, whether the order of what that
meta-tile draws changed (:mod:`tiledelta.plan.exact`).

A feature is *unchanged* when it is in both the snapshot and the data with the same
fingerprint: matched by key for a keyed layer, else the k-th feature with a fingerprint
in the old order is matched with the k-th in the new. Among unchanged features, those
outside a longest run kept in the same relative order have *moved*.
"""

from __future__ import annotations

import bisect

import numpy as np

from tiledelta.change.snapshot import LayerSnapshot
from tiledelta.sources import LayerData


def unchanged_pairs(
    old: LayerSnapshot, new: LayerData, keyed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (old, new) of the features present, unchanged, in both."""
    if keyed:
        okeys, nkeys = np.asarray(old.keys), np.asarray(new.keys)
        if okeys.dtype.kind != nkeys.dtype.kind or nkeys.dtype == object or okeys.dtype == object:
            okeys, nkeys = okeys.astype(str), nkeys.astype(str)
        if len(np.unique(okeys)) == len(okeys) and len(np.unique(nkeys)) == len(nkeys):
            _common, oi, ni = np.intersect1d(okeys, nkeys, assume_unique=True, return_indices=True)
            same = old.fingerprints[oi] == new.fingerprints[ni]
            return oi[same].astype(np.int64), ni[same].astype(np.int64)
    return _pairs_by_occurrence(np.asarray(old.fingerprints), np.asarray(new.fingerprints))


def _occurrence(fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable order by fingerprint, and each feature's rank among equal fingerprints."""
    order = np.argsort(fps, kind="stable")
    s = fps[order]
    start = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(start, np.arange(len(s)), 0)) if len(s) else start
    return order, np.arange(len(s)) - first


def _pairs_by_occurrence(ofp: np.ndarray, nfp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ou, oc = np.unique(ofp, return_counts=True)
    nu, nc = np.unique(nfp, return_counts=True)
    common, oi, ni = np.intersect1d(ou, nu, assume_unique=True, return_indices=True)
    # Fingerprints whose count changed belong to added or deleted features: already dirty.
    stable = set(common[oc[oi] == nc[ni]].tolist())
    if not stable:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    oorder, orank = _occurrence(ofp)
    norder, nrank = _occurrence(nfp)
    okeep = np.isin(ofp[oorder], list(stable))
    nkeep = np.isin(nfp[norder], list(stable))
    # Both sides sorted by (fingerprint, rank) with the same groups: they line up.
    return oorder[okeep].astype(np.int64), norder[nkeep].astype(np.int64)


def moved(old_pos: np.ndarray, new_pos: np.ndarray) -> np.ndarray:
    """Mask over the pairs: True where the feature left the longest run kept in order."""
    if len(old_pos) < 2:
        return np.zeros(len(old_pos), bool)
    by_old = np.argsort(old_pos, kind="stable")
    seq = np.asarray(new_pos)[by_old]
    out = np.zeros(len(seq), bool)
    if np.all(seq[1:] > seq[:-1]):
        return out  # the common case: nothing moved
    keep = _longest_increasing(seq.tolist())
    stay = np.zeros(len(seq), bool)
    stay[keep] = True
    out[by_old] = ~stay
    return out


def _longest_increasing(seq: list[int]) -> list[int]:
    """Indices of one longest strictly increasing subsequence (patience sorting)."""
    tails: list[int] = []  # tails[k]: smallest tail value of an increasing run of length k+1
    tail_at: list[int] = []  # index in seq of that tail
    prev = [-1] * len(seq)
    for i, v in enumerate(seq):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[k] = v
            tail_at[k] = i
        prev[i] = tail_at[k - 1] if k else -1
    out = []
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        out.append(i)
        i = prev[i]
    return out[::-1]
