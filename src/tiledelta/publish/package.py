"""Compact Tile Packages (.tpkx) from the local cache, per Esri's tile-package spec.

A .tpkx is a zip with stored (not deflated) entries: ``iteminfo.json``,
``root.json``, ``thumbnail.png`` and V2 bundles under ``tile/Lnn/``.
With ``changed_only`` the package holds just the tiles the last ``update``
re-rendered, to patch a server's cache without re-rendering there.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

import pyproj

from tiledelta.change import last_update_tiles
from tiledelta.errors import CacheError, ConfigError
from tiledelta.grid import bundle_name, bundle_origin, record_index, scheme_to_root_json
from tiledelta.project import Project
from tiledelta.publish.thumbnail import render_thumbnail
from tiledelta.sources import data_extent, read_layers
from tiledelta.stores import open_project_store
from tiledelta.stores.compact import build_bundle

ROOT_FORMATS = {"png": "PNG32", "png8": "PNG8", "jpeg": "JPEG", "mixed": "MIXED"}


def write_tpkx(
    project: Project,
    out: Path,
    *,
    levels: list[int] | None = None,
    changed_only: bool = False,
    tiles: list[tuple[int, int, int]] | None = None,
    bundles: set[tuple[int, int, int]] | None = None,
) -> dict:
    """Write ``out`` (.tpkx) from the project's cache; return what went in.

    ``tiles`` limits the package to those addresses (a patch: tiles absent from the
    cache are left out); ``changed_only`` takes them from the last update. ``bundles``
    ((level, row0, col0) of bundle origins) are written even when no tile of theirs
    is: an empty bundle that overwrites a server's bundle removes its tiles.
    """
    out = Path(out)
    if out.suffix.lower() != ".tpkx":
        raise ConfigError(f"{out}: a tile package file name must end in .tpkx")
    levels = levels or project.levels
    if not project.cache_path.exists():
        raise CacheError(f"{project.cache_path}: no cache yet; run 'tiledelta seed' first")
    if changed_only:
        addrs = last_update_tiles(project)
        if addrs is None:
            raise CacheError("no update has run since the last seed: nothing counts as changed")
        wanted = [tuple(a) for a in addrs.tolist() if a[0] in levels]
    elif tiles is not None:
        wanted = [tuple(a) for a in tiles if a[0] in levels]
    layers = read_layers(project)
    extent = data_extent(layers) or project.scheme.extent
    scheme = project.cache_scheme
    name = out.stem
    c = project.config.cache
    root = scheme_to_root_json(
        scheme,
        name=name,
        fmt=ROOT_FORMATS[c.format],
        quality=c.quality,
        extent=extent,
        min_level=min(levels),
        max_level=max(levels),
    )
    tmp = out.with_name(out.name + ".tmp")
    per_bundle: dict[tuple[int, int, int], dict[int, bytes]] = defaultdict(dict)
    n = 0
    with open_project_store(project, create=False) as store:
        partial = changed_only or tiles is not None
        addrs_iter = wanted if partial else [a for lv in levels for a in store.iter_tiles(lv)]
        found = store.get_many(addrs_iter)
    for (lv, r, cc), data in found.items():
        key = (lv, *bundle_origin(r, cc))
        per_bundle[key][record_index(r, cc)] = data
        n += 1
    for key in bundles or ():
        per_bundle.setdefault(key, {})
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("iteminfo.json", json.dumps(_iteminfo(name, extent, scheme)))
            z.writestr("root.json", json.dumps(root))
            z.writestr("thumbnail.png", render_thumbnail(project, (200, 133), layers))
            for (lv, r0, c0), bundle in sorted(per_bundle.items()):
                z.writestr(f"tile/L{lv:02d}/{bundle_name(r0, c0)}", build_bundle(bundle))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "package": str(out),
        "tiles": n,
        "bundles": len(per_bundle),
        "levels": sorted({k[0] for k in per_bundle}),
        "changed_only": changed_only or tiles is not None,
    }


def _iteminfo(name: str, extent, scheme) -> dict:
    ext = None
    if extent is not None:
        tr = pyproj.Transformer.from_crs(scheme.crs, "EPSG:4326", always_xy=True)
        xmin, ymin, xmax, ymax = tr.transform_bounds(
            extent[0], extent[1], extent[2], extent[3], densify_pts=11
        )
        ext = {
            "xmin": xmin,
            "ymin": ymin,
            "xmax": xmax,
            "ymax": ymax,
            "spatialReference": {"wkid": 4326, "latestWkid": 4326},
        }
    return {
        "creator": "tiledelta",
        "name": name,
        "guid": str(uuid.uuid4()).upper(),
        "version": 1.0,
        "created": 0,
        "title": name,
        "type": "Compact Tile Package",
        "typeKeywords": ["Compact Tile Package", "Tile Package", "tpkx"],
        "thumbnail": "./thumbnail.png",
        "extent": ext,
        "snippet": "",
        "description": "",
        "summary": "",
        "tags": "",
    }
