"""Uploads and publishing: ``admin/uploads``, the ``Publish Service Definition`` job, and
staging a tiledelta project as a service definition.

A service definition is what ArcGIS's Stage Service writes: a 7-Zip archive holding
``manifest.xml`` (the staged ``SVCManifest``), ``serviceconfiguration.json`` and the data.
Anything else is refused. The data must be one tiledelta project (the emulator renders
with tiledelta); an overwrite keeps the service's cache only when the manifest's top-level
``KeepExistingMapCache`` is true and the configuration declares ``isCached`` true.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import py7zr
from lxml import etree

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
    WARNING,
    Job,
    JobFailed,
    Request,
    Service,
    admin_error,
    safe_filename,
)

MANIFEST = "manifest.xml"
SERVICE_CONFIG = "serviceconfiguration.json"
SD_NEW = "esriServiceDefinitionType_New"
SD_REPLACE = "esriServiceDefinitionType_Replacement"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
#: How ArcGIS starts the message of a Publish Service Definition job that cannot publish.
FAILED_TO_CREATE = "ERROR 001369: Failed to create the service."


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
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            sd = read_service_definition(upload, Path(tmp))
            svc = self.service(sd.folder, sd.name)
            with self._service_lock(svc.key):
                self._begin(job)
                exists = svc.path.exists()
                if exists and not sd.replace:
                    raise JobFailed(
                        f"{FAILED_TO_CREATE} Service {svc.key}.MapServer already exists; "
                        "stage the draft as an overwrite (esriServiceDefinitionType_Replacement)"
                    )
                keep = sd.keep_cache and sd.cached
                if exists and sd.keep_cache and not sd.cached:
                    job.message(
                        "The service definition declares no cache (isCached false): the "
                        "service is published without its cache.",
                        WARNING,
                    )
                job.record.update(
                    {
                        "service": svc.key,
                        "keepExistingMapCache": sd.keep_cache,
                        "isCached": sd.cached,
                        "replace": sd.replace,
                    }
                )
                info = {"folder": sd.folder, "name": sd.name, "keepExistingMapCache": keep}
                if sd.properties.get("antialiasingMode"):
                    info["antialiasing_mode"] = sd.properties["antialiasingMode"]
                self._publish(job, sd.data, svc, keep, info)
        job.results["out_service_url"] = f"{self.url}/rest/services/{svc.key}/MapServer"

    def _publish(self, job: Job, data: Path, svc: Service, keep: bool, info: dict) -> None:
        """Stage the package's project, check it, and swap it in as ``svc`` (two renames)."""
        svc.path.parent.mkdir(parents=True, exist_ok=True)
        staging = svc.path.parent / f".{svc.name}.staging-{secrets.token_hex(4)}"
        old_cache = svc.cache_path
        moved = False
        try:
            shutil.copytree(data, staging)
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


@dataclass
class ServiceDefinition:
    """What the emulator reads from a staged ``.sd``."""

    folder: str
    name: str
    replace: bool  # SVCManifest Type esriServiceDefinitionType_Replacement
    keep_cache: bool  # the top-level KeepExistingMapCache
    cached: bool  # serviceconfiguration.json properties.isCached
    properties: dict[str, str]
    data: Path  # the extracted folder holding the tiledelta project


def _fail_sd(name: str, why: str) -> JobFailed:
    return JobFailed(f"{FAILED_TO_CREATE} {name} is not a valid service definition: {why}")


def read_service_definition(path: Path, work: Path) -> ServiceDefinition:
    """Check and extract a staged ``.sd``: a 7-Zip archive with ``manifest.xml`` (an
    ``SVCManifest``), ``serviceconfiguration.json`` and the data (a tiledelta project)."""
    name = path.name
    if not py7zr.is_7zfile(path):
        raise _fail_sd(name, "a .sd is a 7-Zip (7z) archive staged by Stage Service")
    try:
        with py7zr.SevenZipFile(path, "r") as z:
            names = [n for n in z.getnames()]
            for n in names:
                parts = Path(n).parts
                if n.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise _fail_sd(name, f"the archive holds an unsafe path: {n}")
            missing = [m for m in (MANIFEST, SERVICE_CONFIG) if m not in names]
            if missing:
                raise _fail_sd(name, f"no {' or '.join(missing)} at the top of the archive")
            z.extractall(work)
    except (py7zr.Bad7zFile, py7zr.exceptions.ArchiveError, OSError, EOFError) as exc:
        raise _fail_sd(name, f"the 7z archive cannot be read ({type(exc).__name__})") from None
    manifest = (work / MANIFEST).read_bytes()
    try:
        root = etree.fromstring(manifest, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise _fail_sd(name, f"{MANIFEST} is not well-formed XML ({exc})") from None
    if etree.QName(root).localname != "SVCManifest":
        raise _fail_sd(name, f"{MANIFEST} is not an SVCManifest")
    for el in root.iter():
        value = el.get(f"{{{XSI}}}type") if isinstance(el.tag, str) else None
        if value and ":" in value and value.split(":", 1)[0] not in el.nsmap:
            raise _fail_sd(name, f"{MANIFEST}: xsi:type={value!r} uses an undeclared prefix")
    top = {etree.QName(c).localname: (c.text or "").strip() for c in root if isinstance(c.tag, str)}
    if top.get("State") != "esriSDState_Staged":
        raise _fail_sd(name, f"{MANIFEST}: the state is {top.get('State')!r}, not staged")
    if top.get("KeepExistingMapCache") not in ("true", "false"):
        raise _fail_sd(name, f"{MANIFEST}: no top-level KeepExistingMapCache true|false")
    kind = top.get("Type", "")
    if kind not in (SD_NEW, SD_REPLACE):
        raise _fail_sd(name, f"{MANIFEST}: Type {kind!r} is not {SD_NEW} or {SD_REPLACE}")
    try:
        config = json.loads((work / SERVICE_CONFIG).read_text("utf-8"))
        service = config["service"]
        svc_name, svc_type = str(service["serviceName"]), service["type"]
        folder = str(config.get("folderName") or "")
        props = {str(k): str(v) for k, v in (service.get("properties") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _fail_sd(name, f"{SERVICE_CONFIG} lacks folderName/service ({exc})") from None
    if svc_type != "MapServer":
        raise _fail_sd(name, f"{SERVICE_CONFIG}: service type {svc_type!r}; only MapServer")
    if not NAME_RE.match(svc_name) or (folder and not NAME_RE.match(folder)):
        raise JobFailed(
            f"{SERVICE_CONFIG}: folder {folder!r} / name {svc_name!r} must use letters, "
            "digits and underscores only"
        )
    if folder in RESERVED_FOLDERS:
        raise JobFailed(f"{SERVICE_CONFIG}: the {folder} folder is reserved")
    homes = [p.parent for p in work.glob(f"*/{PROJECT_FILE}")] + [
        p.parent for p in work.glob(PROJECT_FILE)
    ]
    if len(homes) != 1:
        raise _fail_sd(
            name, f"the emulator needs the data as one tiledelta project ({PROJECT_FILE})"
        )
    return ServiceDefinition(
        folder=folder,
        name=svc_name,
        replace=kind == SD_REPLACE,
        keep_cache=top["KeepExistingMapCache"] == "true",
        cached=props.get("isCached", "false").lower() == "true",
        properties=props,
        data=homes[0],
    )


MANIFEST_XML = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    "<SVCManifest xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' "
    "xmlns:xs='http://www.w3.org/2001/XMLSchema' "
    "xmlns:typens='http://www.esri.com/schemas/ArcGIS/3.3' xsi:type='typens:SVCManifest'>"
    "<ID>{{{id}}}</ID><Name>{name}</Name><Type>{type}</Type><State>esriSDState_Staged</State>"
    "<KeepExistingData>false</KeepExistingData>"
    "<KeepExistingMapCache>{keep}</KeepExistingMapCache>"
    "<Resources xsi:type='typens:ArrayOfSVCResource'/></SVCManifest>"
)


def make_service_definition(
    project: Path,
    out: Path,
    folder: str,
    name: str,
    *,
    keep_cache: bool = True,
    include_cache: bool = False,
    cached: bool = True,
    overwrite: bool = True,
) -> Path:
    """Stage a tiledelta project as a service definition the emulator publishes.

    A real-shaped ``.sd``: a 7-Zip archive with ``manifest.xml`` (an ``SVCManifest``
    with the top-level ``KeepExistingMapCache``), ``serviceconfiguration.json``
    (``isCached``) and the project under ``p30/`` (the emulator renders with tiledelta).
    """
    project, out = Path(project), Path(out)
    manifest = MANIFEST_XML.format(
        id=uuid.uuid4(),
        name=name,
        type=SD_REPLACE if overwrite else SD_NEW,
        keep=str(keep_cache).lower(),
    )
    config = {
        "folderName": folder,
        "service": {
            "serviceName": name,
            "type": "MapServer",
            "properties": {"isCached": str(cached).lower(), "cacheOnDemand": "false"},
        },
    }
    out.unlink(missing_ok=True)
    with py7zr.SevenZipFile(out, "w") as z:
        z.writestr(manifest.encode("utf-8"), MANIFEST)
        z.writestr(json.dumps(config).encode("utf-8"), SERVICE_CONFIG)
        for p in sorted(project.rglob("*")):
            rel = p.relative_to(project)
            if p.is_dir() or rel.parts[0] in (STATE_DIR, ".env") or p.suffix == ".sd":
                continue
            if rel.parts[0] == CACHE_DIR and not include_cache:
                continue
            z.write(p, f"p30/{rel.as_posix()}")
    return out
