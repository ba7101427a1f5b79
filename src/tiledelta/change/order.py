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
in the old order is matched with the k-th in the new (:mod:`tiledelta.change.diff`).
Among unchanged features, those outside a longest run kept in the same relative order
have *moved*.
"""

from __future__ import annotations

import bisect

import numpy as np


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
