"""Hosted tile layers: a layer published from a portal item's tile package (.tpkx), kept as a
real Compact Cache V2, served at ``rest/services/Hosted/<Name>/MapServer`` and updated by
``importTiles`` on ``rest/admin/services/Hosted/<Name>/MapServer`` (``docs/emulator.md``).

``importTiles`` reads the uploaded package item (``sourceItemId``) and applies Esri's
documented semantics to the layer's bundles: without ``mergeBundle`` each bundle of the
package overwrites the layer's bundle whole; with ``mergeBundle`` the tiles are merged
into the layer's bundles, the package's tiles replacing existing ones only with
``replaceTiles``. ``levels`` and ``extent`` choose which of the package's bundles are used.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tiledelta.errors import TileDeltaError
from tiledelta.grid import BUNDLE_PACKET, bundle_origin, scheme_to_tile_info, tile_bounds
from tiledelta.stores import CompactCache, open_tpkx, read_compact_cache

from .model import (
    CURRENT_VERSION,
    Faults,
    Job,
    JobFailed,
    Request,
    Response,
    admin_error,
    content_type,
    json_response,
    redact,
    rest_error,
)
from .multipart import parse_extent

NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
IMPORT_TASK = "importTiles"


def parse_levels(text: str) -> set[int] | None:
    """``0-5,10,11-20`` (or ``1;2``) as a set of levels; None for all."""
    text = (text or "").strip()
    if not text:
        return None
    out: set[int] = set()
    for part in re.split(r"[,;\s]+", text):
        if not part:
            continue
        a, sep, b = part.partition("-")
        out.update(range(int(a), int(b) + 1) if sep else {int(a)})
    return out


BUNDLE_RE = re.compile(r"^L(\d{2})/R([0-9a-fA-F]{4,})C([0-9a-fA-F]{4,})\.bundle$")


def package_bundles(path: Path) -> set[tuple[int, int, int]]:
    """(level, row0, col0) of every bundle file in a tile package, read from the zip
    itself (an empty bundle counts: it overwrites a bundle with nothing)."""
    with zipfile.ZipFile(path) as z:
        root = json.loads(z.read("root.json"))
        base = str(root.get("tileBundlesPath", "./tile")).removeprefix("./").strip("/")
        out = set()
        for name in z.namelist():
            if name.startswith(base + "/"):
                m = BUNDLE_RE.match(name[len(base) + 1 :])
                if m:
                    out.add((int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)))
    return out


def _true(value: str | None) -> bool:
    return str(value or "").strip().lower() == "true"


class HostedMixin:
    """Hosted tile layers of :class:`~support.emulator.server.Emulator`."""

    root: Path
    username: str
    faults: Faults
    jobs: dict[str, Job]
    portal_items: dict[str, Any]
    _lock: threading.RLock

    def _hosted_dir(self, name: str) -> Path:
        return self.root / "hosted" / name

    def _hosted_layer(self, name: str) -> Path | None:
        d = self._hosted_dir(name)
        return d if NAME_RE.match(name) and (d / "info.json").is_file() else None

    def hosted_cache(self, name: str) -> Path:
        """The compact cache folder of the hosted tile layer ``name``."""
        return self._hosted_dir(name) / "cache"

    def publish_hosted_tile_layer(self, item_id: str, name: str) -> str:
        """Publish the tile package of portal item ``item_id`` as the hosted tile layer
        ``Hosted/<name>``; return its service name. The package's bundles become the
        layer's cache; the item is left as it is."""
        if not NAME_RE.match(name):
            raise ValueError(f"bad service name {name!r}")
        it = self.portal_items[item_id]
        data = it.data_path
        if data is None:
            raise ValueError(f"item {item_id} has no tile package")
        folder = self._hosted_dir(name)
        with open_tpkx(data) as pkg:
            store = CompactCache(folder / "cache", pkg.scheme, fmt=pkg.fmt, create=True)
            tiles = [(a, pkg.get(*a)) for a in pkg.iter_tiles()]
            store.put_many([(*a, d) for a, d in tiles if d is not None])
            store.close()
            levels = sorted({a[0] for a, _ in tiles})
            root = pkg.root
        info = {
            "name": name,
            "sourceItemId": item_id,
            "minLOD": int(root.get("minLOD", min(levels, default=0))),
            "maxLOD": int(root.get("maxLOD", max(levels, default=0))),
            "published": int(time.time() * 1000),
        }
        (folder / "info.json").write_text(json.dumps(info), "utf-8")
        return f"Hosted/{name}"

    def _hosted_info(self, name: str) -> dict[str, Any]:
        return json.loads((self._hosted_dir(name) / "info.json").read_text("utf-8"))

    # -- rest/services/Hosted/<name>/MapServer ------------------------------------------------
    def _hosted_mapserver(self, req: Request, name: str, rest: list[str]) -> Response:
        cache = read_compact_cache(self.hosted_cache(name))
        if not rest:
            meta = self._hosted_info(name)
            tile_info = scheme_to_tile_info(cache.scheme)
            lods = [d for d in tile_info["lods"] if meta["minLOD"] <= d["level"] <= meta["maxLOD"]]
            tile_info["lods"] = lods
            return json_response(
                {
                    "currentVersion": CURRENT_VERSION,
                    "mapName": name,
                    "serviceDescription": "",
                    "singleFusedMapCache": True,
                    "spatialReference": tile_info["spatialReference"],
                    "tileInfo": tile_info,
                    "storageInfo": {
                        "storageFormat": "esriMapCacheStorageModeCompactV2",
                        "packetSize": BUNDLE_PACKET,
                    },
                    "minLOD": meta["minLOD"],
                    "maxLOD": meta["maxLOD"],
                    "capabilities": "Map,TilesOnly",
                    "cacheType": "Map",
                },
                req.pretty,
            )
        if rest[0] == "tile" and len(rest) == 4:
            try:
                level, row, col = (int(x) for x in rest[1:])
                data = cache.get(level, row, col) if row >= 0 and col >= 0 else None
            except (ValueError, TileDeltaError):
                data = None
            if data is None:
                return json_response(rest_error(404, "Tile not found"), status=404)
            return Response(200, data, content_type(data), {"Cache-Control": "no-cache"})
        return json_response(rest_error(400, "Invalid URL", [req.path]), req.pretty)

    # -- rest/admin/services/Hosted/<name>/MapServer/... -------------------------------------
    def _hosted_admin(self, req: Request, seg: list[str]) -> Response:
        p = req.pretty
        denied = self._check_token(req)  # type: ignore[attr-defined]
        if denied:
            return json_response(
                rest_error(denied, "Invalid Token" if denied == 498 else "Token Required"), p
            )
        if len(seg) < 4 or seg[0] != "Hosted" or seg[2] != "MapServer":
            return json_response(rest_error(404, "Service not found", [req.path]), p)
        name = seg[1]
        if self._hosted_layer(name) is None:
            return json_response(rest_error(404, "Service not found", [f"Hosted/{name}"]), p)
        op = seg[3:]
        if op == [IMPORT_TASK]:
            if req.method != "POST":
                return json_response(rest_error(405, "importTiles takes POST only."), p)
            return json_response(self._import_tiles(name, req.params), p)
        if len(op) == 2 and op[0] == "jobs":
            job = self.jobs.get(op[1])
            if job is None or job.service != f"Hosted/{name}":
                return json_response(rest_error(400, "Job not found", [op[1]]), p)
            job.messages_asked = req.params.get("returnMessages", "").lower() == "true"
            return json_response(job.info(), p)
        return json_response(admin_error(404, [f"{req.path} is not implemented."]), p)

    def _import_tiles(self, name: str, params: dict[str, str]) -> dict:
        src = params.get("sourceItemId", "").strip()
        if not src:
            return rest_error(400, "Unable to import tiles.", ["sourceItemId is required."])
        with self._lock:
            end = self.faults.end_next_jobs.pop(0) if self.faults.end_next_jobs else None
            job = Job(
                id="j" + uuid.uuid4().hex,
                service=f"Hosted/{name}",
                task=IMPORT_TASK,
                params=redact(params),
                submitted=time.time(),
                inject_end=end,
            )
            self.jobs[job.id] = job
        job.message(f"Submitted. (importTiles on Hosted/{name}, tiledelta emulator)")
        args = {k: v for k, v in params.items() if k not in ("token", "f")}
        threading.Thread(
            target=self._run_job,  # type: ignore[attr-defined]
            args=(job, lambda j, a: self._import_work(j, name, a), args),
            daemon=True,
        ).start()
        return {
            "id": str(uuid.uuid4()),
            "name": name,
            "itemId": src,
            "status": "success",
            "type": "Map Service",
            "jobId": job.id,
            "message": "success",
        }

    def _import_work(self, job: Job, name: str, params: dict[str, str]) -> None:
        self._begin(job)  # type: ignore[attr-defined]
        src = params["sourceItemId"]
        it = self.portal_items.get(src)
        if it is None or it.info().get("owner") != self.username:
            raise JobFailed(f"Item {src} does not exist or is inaccessible (sourceItemId).")
        data = it.data_path
        if data is None or data.suffix.lower() not in (".tpkx", ".tpk"):
            raise JobFailed(f"Item {src} holds no tile package (.tpkx / .tpk).")
        try:
            levels = parse_levels(params.get("levels", ""))
            extent = parse_extent(params.get("extent", ""))
        except (ValueError, KeyError) as exc:
            raise JobFailed(f"Invalid levels or extent: {exc}") from None
        merge = _true(params.get("mergeBundle"))
        replace = _true(params.get("replaceTiles"))
        meta = self._hosted_info(name)
        current = read_compact_cache(self.hosted_cache(name))
        try:
            pkg = open_tpkx(data)
        except TileDeltaError as exc:
            raise JobFailed(f"Item {src}: {exc}") from None
        rec = job.record
        rec.update(
            item=src,
            merge=merge,
            replace=replace,
            levels=sorted(levels or []),
            extent=extent,
            written=[],
            deleted=[],
            kept=[],
            bundles=[],
        )
        with pkg:
            if not current.scheme.same_grid(pkg.scheme):
                raise JobFailed("The tile package's tiling scheme does not match the service's.")
            per_bundle: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
            for key in package_bundles(data):
                per_bundle[key] = []
            for lv, r, c in pkg.iter_tiles():
                per_bundle[(lv, *bundle_origin(r, c))].append((r, c))
            outside = sorted(
                {k[0] for k in per_bundle} - set(range(meta["minLOD"], meta["maxLOD"] + 1))
            )
            if outside:
                raise JobFailed(
                    f"The package has levels {outside} that the service has no LOD for."
                )
            store = CompactCache(
                self.hosted_cache(name),
                current.scheme,
                fmt=current.fmt,
                quality=current.quality,
                create=False,
            )
            try:
                for (lv, r0, c0), tiles in sorted(per_bundle.items()):
                    if levels is not None and lv not in levels:
                        continue
                    if extent is not None:
                        a = tile_bounds(current.scheme, lv, r0, c0)
                        b = tile_bounds(
                            current.scheme, lv, r0 + BUNDLE_PACKET - 1, c0 + BUNDLE_PACKET - 1
                        )
                        if (
                            a.xmin > extent[2]
                            or b.xmax < extent[0]
                            or b.ymin > extent[3]
                            or a.ymax < extent[1]
                        ):
                            continue
                    self._checkpoint(job)  # type: ignore[attr-defined]
                    rec["bundles"].append((lv, r0, c0))
                    existing = {
                        a for a in store.iter_tiles(lv) if bundle_origin(a[1], a[2]) == (r0, c0)
                    }
                    writes: list[tuple[int, int, int, bytes | None]] = []
                    incoming = {(lv, r, c) for r, c in tiles}
                    if not merge:  # the package's bundle overwrites the service's whole
                        for a in sorted(existing - incoming):
                            writes.append((*a, None))
                            rec["deleted"].append(a)
                    for a in sorted(incoming):
                        if merge and not replace and a in existing:
                            rec["kept"].append(a)
                            continue
                        tile = pkg.get(*a)
                        if tile is not None:
                            writes.append((*a, tile))
                            rec["written"].append(a)
                    store.put_many(writes)
            finally:
                store.close()
        job.message(
            f"Imported {len(rec['written']):,} tiles from {len(rec['bundles'])} bundle(s) of item "
            f"{src} (mergeBundle={str(merge).lower()}, replaceTiles={str(replace).lower()}); "
            f"{len(rec['deleted']):,} removed with overwritten bundles, {len(rec['kept']):,} kept."
        )
