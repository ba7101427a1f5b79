"""Which field of a dataset layer can be its key: a unique integer id (``tiledelta init``)."""

from __future__ import annotations

import numpy as np
import pyogrio

#: Field names that usually hold a feature id, best first (case-insensitive); then any
#: name ending in ``_id``.
ID_NAMES = ("objectid", "fid", "id")


def _candidates(fields: list[str], dtypes: list[str]) -> list[str]:
    ints = [f for f, t in zip(fields, dtypes, strict=True) if np.dtype(t).kind in "iu"]
    ranked = [f for name in ID_NAMES for f in ints if f.lower() == name]
    ranked += [f for f in ints if f not in ranked and f.lower().endswith("_id")]
    return ranked


def find_key_field(path: str, layer: str | None = None) -> str | None:
    """The first integer field named like an id (OBJECTID, FID, ``*_id``, ``id``) whose
    values are present and unique in ``path`` (layer ``layer``); None when there is none."""
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception:  # unreadable: the caller's own checks say why
        return None
    fields = [str(f) for f in info["fields"]]
    for name in _candidates(fields, [str(t) for t in info["dtypes"]]):
        try:
            _meta, _fids, _geom, values = pyogrio.raw.read(
                path, layer=layer, columns=[name], read_geometry=False
            )
        except Exception:
            continue
        col = np.asarray(values[0])
        if np.ma.isMaskedArray(values[0]) and np.ma.getmaskarray(values[0]).any():
            continue
        if col.dtype.kind in "iu" and len(np.unique(col)) == len(col):
            return name
    return None
