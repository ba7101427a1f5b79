"""The diff between a layer's snapshot and its current data: added, modified, deleted,
and the old and new boxes whose tiles those changes dirty."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tiledelta.change.order import moved
from tiledelta.change.snapshot import LayerSnapshot
from tiledelta.sources import LayerData

log = logging.getLogger(__name__)


@dataclass
class LayerChange:
    """Changes of one layer: counts, and the boxes whose tiles they dirty."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    old_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    new_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    #: indices, in the current layer data, of the added and modified features
    new_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: unchanged features that changed their place in the draw order, and where they are
    reordered: int = 0
    moved_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    @property
    def boxes(self) -> np.ndarray:
        """Where the changes were and are: the boxes whose tiles they may dirty."""
        return np.concatenate(
            [
                self.old_boxes.reshape(-1, 4),
                self.new_boxes.reshape(-1, 4),
                self.moved_boxes.reshape(-1, 4),
            ]
        )

    @property
    def changed(self) -> bool:
        return bool(self.added or self.modified or self.deleted or self.reordered)

    def as_dict(self) -> dict:
        out = {"added": self.added, "modified": self.modified, "deleted": self.deleted}
        if self.reordered:
            out["reordered"] = self.reordered
        return out


def diff_layer(old: LayerSnapshot | None, new: LayerData, keyed: bool) -> LayerChange:
    """Added / modified / deleted features between a snapshot and current data.

    With a key field, features are matched by key (an edit is "modified");
    without one, by fingerprint as a multiset (an edit is delete + add).
    """
    if old is None:
        return LayerChange(
            added=len(new), new_boxes=new.bounds, new_idx=np.arange(len(new), dtype=np.int64)
        )
    if keyed:
        return _diff_keyed(old, new)
    return _diff_multiset(old, new)


def _diff_keyed(old: LayerSnapshot, new: LayerData) -> LayerChange:
    okeys = np.asarray(old.keys)
    nkeys = np.asarray(new.keys)
    if okeys.dtype.kind != nkeys.dtype.kind or object in (nkeys.dtype, okeys.dtype):
        okeys, nkeys = okeys.astype(str), nkeys.astype(str)
    for side, keys in (("the data", nkeys), ("the last build", okeys)):
        dup = _a_duplicate(keys)
        if dup is not None:
            # Keys that repeat cannot match features one to one: compare by fingerprint.
            log.warning(
                "layer %r: key values repeat in %s (e.g. %r appears more than once); "
                "matching its features by content instead; make [layers.%s] key unique",
                new.name,
                side,
                dup,
                new.name,
            )
            return _diff_multiset(old, new)
    common, oi, ni = np.intersect1d(okeys, nkeys, assume_unique=True, return_indices=True)
    mod = old.fingerprints[oi] != new.fingerprints[ni]
    del_mask = np.ones(len(okeys), bool)
    del_mask[oi] = False
    add_mask = np.ones(len(nkeys), bool)
    add_mask[ni] = False
    old_boxes = old.bounds_at(np.concatenate([np.flatnonzero(del_mask), oi[mod]]))
    new_boxes = np.concatenate([new.bounds[add_mask], new.bounds[ni[mod]]])
    change = LayerChange(
        added=int(add_mask.sum()),
        modified=int(mod.sum()),
        deleted=int(del_mask.sum()),
        old_boxes=old_boxes,
        new_boxes=new_boxes,
        new_idx=np.concatenate([np.flatnonzero(add_mask), ni[mod]]).astype(np.int64),
    )
    return _with_order(change, old, new, oi[~mod], ni[~mod])


#: Rows per step of the multiset diff's passes: its temporaries stay this size, not the
#: layer's (ten million features would otherwise need gigabytes besides both sides).
CHUNK = 1 << 20


def _surplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The occurrences in sorted ``a`` beyond the count of their value in sorted ``b``
    (a value 3 times in ``a`` and once in ``b`` appears twice), sorted."""
    out = [np.zeros(0, dtype=a.dtype)]
    for s in range(0, len(a), CHUNK):
        part = a[s : s + CHUNK]
        rank = np.arange(s, s + len(part)) - np.searchsorted(a, part, "left")
        have = np.searchsorted(b, part, "right") - np.searchsorted(b, part, "left")
        out.append(part[have <= rank])
    return np.concatenate(out)


def _member(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.isin(values, table)`` for a sorted, unique ``table``, a chunk at a time."""
    out = np.zeros(len(values), dtype=bool)
    if not len(table):
        return out
    for s in range(0, len(values), CHUNK):
        part = values[s : s + CHUNK]
        at = np.minimum(np.searchsorted(table, part), len(table) - 1)
        out[s : s + len(part)] = table[at] == part
    return out


def _same_rest(a: np.ndarray, a_out: np.ndarray, b: np.ndarray, b_out: np.ndarray) -> bool:
    """``np.array_equal(a[~a_out], b[~b_out])``, compared a chunk at a time."""

    def kept(x: np.ndarray, out: np.ndarray) -> Iterator[np.ndarray]:
        for s in range(0, len(x), CHUNK):
            yield x[s : s + CHUNK][~out[s : s + CHUNK]]

    ia, ib = kept(a, a_out), kept(b, b_out)
    pa: np.ndarray | None = a[:0]
    pb: np.ndarray | None = b[:0]
    while True:
        while pa is not None and not len(pa):
            pa = next(ia, None)
        while pb is not None and not len(pb):
            pb = next(ib, None)
        if pa is None or pb is None:
            return pa is None and pb is None
        n = min(len(pa), len(pb))
        if not np.array_equal(pa[:n], pb[:n]):
            return False
        pa, pb = pa[n:], pb[n:]


#: At most this many bits of a fingerprint pick its bucket (:func:`_surpluses`).
BUCKET_BITS = 8


def _surpluses(ofp: np.ndarray, nfp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_surplus`` of each side against the other, sorted. 64-bit fingerprints (hashes,
    spread evenly) are taken a bucket of their top bits at a time, about :data:`CHUNK`
    of them a side: each bucket's values are sorted, not a whole side's (at ten million
    features two sorted copies were 160 MB). The buckets in order are the sorted sides."""
    n = max(len(ofp), len(nfp))
    if n <= CHUNK or ofp.dtype != np.uint64 or nfp.dtype != np.uint64:
        so, sn = np.sort(ofp), np.sort(nfp)
        return _surplus(so, sn), _surplus(sn, so)
    bits = min(BUCKET_BITS, int(np.ceil(np.log2(n / CHUNK))))
    ob, nb = _buckets(ofp, bits), _buckets(nfp, bits)
    outs: tuple[list[np.ndarray], list[np.ndarray]] = ([ofp[:0]], [nfp[:0]])
    for b in range(1 << bits):
        so, sn = ofp[ob == b], nfp[nb == b]  # copies, sorted in place
        so.sort()
        sn.sort()
        outs[0].append(_surplus(so, sn))
        outs[1].append(_surplus(sn, so))
    return np.concatenate(outs[0]), np.concatenate(outs[1])


def _buckets(fps: np.ndarray, bits: int) -> np.ndarray:
    """The top ``bits`` (at most 8) of each fingerprint, a chunk at a time."""
    out = np.empty(len(fps), dtype=np.uint8)
    for s in range(0, len(fps), CHUNK):
        out[s : s + CHUNK] = fps[s : s + CHUNK] >> np.uint64(64 - bits)
    return out


def _diff_multiset(old: LayerSnapshot, new: LayerData) -> LayerChange:
    ofp, nfp = np.asarray(old.fingerprints), np.asarray(new.fingerprints)
    surplus_old, surplus_new = _surpluses(ofp, nfp)
    # The fingerprints whose count differs between the two sides, sorted and unique.
    changed = np.union1d(surplus_old, surplus_new)
    gone = _member(ofp, changed)
    came = _member(nfp, changed)
    deleted, added = len(surplus_old), len(surplus_new)
    old_boxes, new_boxes = old.bounds_at(np.flatnonzero(gone)), new.bounds[came]
    change = LayerChange(
        added=added,
        deleted=deleted,
        old_boxes=old_boxes,
        new_boxes=new_boxes,
        new_idx=np.flatnonzero(came).astype(np.int64),
    )
    # What is left on both sides is the same multiset of fingerprints: in the same order
    # (the usual case, one comparison), or paired k-th occurrence to k-th occurrence.
    if _same_rest(ofp, gone, nfp, came):
        return change
    rest_old, rest_new = np.flatnonzero(~gone), np.flatnonzero(~came)
    oi = rest_old[np.argsort(old.fingerprints[rest_old], kind="stable")]
    ni = rest_new[np.argsort(new.fingerprints[rest_new], kind="stable")]
    return _with_order(change, old, new, oi, ni)


def _with_order(
    change: LayerChange, old: LayerSnapshot, new: LayerData, oi: np.ndarray, ni: np.ndarray
) -> LayerChange:
    """Add the unchanged features (old position ``oi``, new ``ni``) that moved in the order."""
    gone = moved(oi, ni)
    if gone.any():
        change.reordered = int(gone.sum())
        change.moved_boxes = np.concatenate(
            [old.bounds_at(oi[gone]).reshape(-1, 4), new.bounds[ni[gone]].reshape(-1, 4)]
        )
    return change


def _a_duplicate(keys: np.ndarray) -> object | None:
    """One key value that appears more than once, or None."""
    if len(keys) < 2:
        return None
    s = np.sort(keys, kind="stable")
    rep = np.flatnonzero(s[1:] == s[:-1])
    if not len(rep):
        return None
    value = s[rep[0]]
    return value.item() if isinstance(value, np.generic) else value
