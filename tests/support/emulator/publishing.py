"""Uploads and publishing: ``admin/uploads``, the ``Publish Service Definition`` job, and
the emulator's own service-definition packaging (a zip of a tiledelta project plus
``serviceinfo.json``; real 7-Zip ``.sd`` files are not read)."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path

from tiledelta.api import load_project
from tiledelta.errors import TileDeltaError
from tiledelta.project import PROJECT_FILE, STATE_DIR, Project
from tiledelta.sources import data_extent, display_path, read_layers
from tiledelta.stores import open_project_store

from .model import (
    CACHE_DIR,
    NAME_RE,
    RESERVED_FOLDERS,
    SERVICE_INFO,
    UPLOAD_ID_RE,
    Job,
    JobFailed,
    Request,
    Service,
    admin_error,
    safe_filename,
)


class PublishingMixin:
    """Uploads and publishing of :class:`~support.emulator.server.Emulator`.

    It uses the emulator's state (annotated below), its service lookup and locks, and
    the job steps of :class:`~support.emulator.jobs.JobsMixin` (``_begin``,
    ``_checkpoint``).
    """

    root: Path
    url: str
    _lock: threading.RLock
    _readers: dict[str, tuple[tuple, object]]

    # -- admin/uploads ----------------------------------------------------------------------
    def _upload(self, req: Request) -> dict:
        if "itemFile" not in req.files:
            return admin_error(400, ["The multipart field itemFile (the file) is missing."])
        fname, data = req.files["itemFile"]
        item_id = "i" + uuid.uuid4().hex
        folder = self.root / "uploads" / item_id
        folder.mkdir(parents=True)
        name = safe_filename(fname)
        (folder / name).write_bytes(data)
        item = {
            "itemID": item_id,
            "itemName": name,
            "description": req.params.get("description", ""),
            "pathOnServer": str(folder / name),
            "date": int(time.time() * 1000),
            "committed": True,
            "size": len(data),
        }
        (folder / "item.json").write_text(json.dumps(item), "utf-8")
        return {"status": "success", "item": item}

    def _upload_file(self, item_id: str) -> Path | None:
        if not UPLOAD_ID_RE.fullmatch(item_id or ""):
            return None
        folder = self.root / "uploads" / item_id
        files = (
            [p for p in folder.iterdir() if p.is_file() and p.name != "item.json"]
            if (folder.is_dir())
            else []
        )
        return files[0] if files else None

    # -- Publish Service Definition ---------------------------------------------------------
    def _publish_job(self, job: Job, params: dict[str, str]) -> None:
        item = params.get("in_sdp_id", "").strip()
        upload = self._upload_file(item)
        if upload is None:
            raise JobFailed(f"Item {item or '(none)'} not found among the uploads (in_sdp_id)")
        try:
            zf = zipfile.ZipFile(upload)
        except (zipfile.BadZipFile, OSError):
            raise JobFailed(
                f"{upload.name} is not a service definition this emulator can read: it expects "
                f"a zip holding a tiledelta project and {SERVICE_INFO} (docs/emulator.md); "
                "real .sd files (7z with an .sddraft) are not supported"
            ) from None
        with zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            prefix = ""
            if SERVICE_INFO not in names:
                tops = [n for n in names if n.count("/") == 1 and n.endswith(f"/{SERVICE_INFO}")]
                if len(tops) != 1:
                    raise JobFailed(f"{upload.name}: no {SERVICE_INFO} at the top of the zip")
                prefix = tops[0][: -len(SERVICE_INFO)]
            try:
                info = json.loads(zf.read(prefix + SERVICE_INFO))
            except ValueError as exc:
                raise JobFailed(
                    f"{upload.name}: {SERVICE_INFO} is not valid JSON ({exc})"
                ) from None
            if not isinstance(info, dict):
                raise JobFailed(f"{upload.name}: {SERVICE_INFO} must be a JSON object")
            folder, name = str(info.get("folder") or ""), str(info.get("name") or "")
            keep = info.get("keepExistingMapCache", False) is True
            if not NAME_RE.match(name) or (folder and not NAME_RE.match(folder)):
                raise JobFailed(
                    f"{SERVICE_INFO}: folder {folder!r} / name {name!r} must use letters, "
                    "digits and underscores only"
                )
            if folder in RESERVED_FOLDERS:
                raise JobFailed(f"{SERVICE_INFO}: the {folder} folder is reserved")
            svc = self.service(folder, name)
            with self._service_lock(svc.key):
                self._begin(job)
                job.record.update({"service": svc.key, "keepExistingMapCache": keep})
                self._publish(job, zf, prefix, names, svc, keep, info)
        job.results["out_service_url"] = f"{self.url}/rest/services/{svc.key}/MapServer"

    def _publish(
        self,
        job: Job,
        zf: zipfile.ZipFile,
        prefix: str,
        names: list[str],
        svc: Service,
        keep: bool,
        info: dict,
    ) -> None:
        """Stage the package's project, check it, and swap it in as ``svc`` (two renames)."""
        svc.path.parent.mkdir(parents=True, exist_ok=True)
        staging = svc.path.parent / f".{svc.name}.staging-{secrets.token_hex(4)}"
        old_cache = svc.cache_path
        moved = False
        try:
            for n in names:
                rel = n[len(prefix) :]
                parts = Path(rel).parts
                if not rel or rel.startswith("/") or ".." in parts or ":" in parts[0]:
                    raise JobFailed(f"the zip holds an unsafe path: {n}")
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(n) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            if not (staging / PROJECT_FILE).is_file():
                raise JobFailed(f"the service definition holds no {PROJECT_FILE}")
            shutil.rmtree(staging / STATE_DIR, ignore_errors=True)
            project = Project.load(staging)
            cfg = project.config.cache
            if cfg.kind != "compact" or cfg.path != CACHE_DIR:
                project.updated(cache={"kind": "compact", "path": CACHE_DIR}).save()
                job.message(
                    f"The service caches into a Compact Cache V2 in {CACHE_DIR}/ "
                    "(set by the server)."
                )
            project = load_project(staging)
            for lyr in project.style.layers:
                if lyr.kind == "postgis" or not Path(lyr.path).resolve().is_relative_to(
                    staging.resolve()
                ):
                    raise JobFailed(
                        f"layer {lyr.name!r} reads {display_path(lyr)}, which is not inside the "
                        "service definition; copy the data into the .sd"
                    )
            sd_cache = staging / CACHE_DIR
            if svc.path.exists() and (old_cache / "conf.xml").is_file():
                if keep:
                    if sd_cache.exists():
                        shutil.rmtree(sd_cache)
                        job.message("Ignored the cache inside the .sd: keeping the existing cache.")
                    old_cache.rename(sd_cache)
                    moved = True
                    job.message("Keeping the existing map cache (keepExistingMapCache).")
                else:
                    job.message("The existing map cache is deleted (keepExistingMapCache false).")
            elif (sd_cache / "conf.xml").is_file():
                job.message("Using the map cache packaged in the .sd.")
            try:
                open_project_store(project, create=True).close()
            except TileDeltaError as exc:
                raise JobFailed(f"the map cache does not fit the new service: {exc}") from None
            extent = data_extent(read_layers(project)) or project.extent or project.scheme.extent
            doc = {
                **{k: v for k, v in info.items() if k != "extent"},
                "folder": svc.folder,
                "name": svc.name,
                "extent": list(extent) if extent else None,
                "published": int(time.time() * 1000),
            }
            (staging / SERVICE_INFO).write_text(json.dumps(doc, indent=1), "utf-8")
            self._checkpoint(job)
            retired = None
            if svc.path.exists():
                retired = svc.path.with_name(f".{svc.name}.old-{secrets.token_hex(4)}")
                svc.path.rename(retired)
            staging.rename(svc.path)
            moved = False
            if retired is not None:
                shutil.rmtree(retired, ignore_errors=True)
            with self._lock:
                self._readers.pop(svc.key, None)
            job.message(f"Published {svc.key}.MapServer.")
        finally:
            if moved and (staging / CACHE_DIR).exists():
                (staging / CACHE_DIR).rename(old_cache)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def make_service_definition(
    project: Path,
    out: Path,
    folder: str,
    name: str,
    *,
    keep_cache: bool = True,
    include_cache: bool = False,
) -> Path:
    """Package a tiledelta project as the emulator's service definition (a zip + serviceinfo).

    Emulator-only: real ArcGIS .sd files are 7-Zip archives staged by ArcGIS Pro.
    """
    project, out = Path(project), Path(out)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = {"folder": folder, "name": name, "keepExistingMapCache": keep_cache}
        zf.writestr(SERVICE_INFO, json.dumps(info))
        for p in sorted(project.rglob("*")):
            rel = p.relative_to(project)
            if p.is_dir() or rel.parts[0] in (STATE_DIR, ".env") or p.suffix == ".sd":
                continue
            if rel.parts[0] == CACHE_DIR and not include_cache:
                continue
            zf.write(p, rel.as_posix())
    return out
