"""``arcpy.server`` stand-in: ``StageService`` (draft -> real 7-Zip ``.sd``) and
``UploadServiceDefinition`` (upload and publish on an ArcGIS Server site over HTTP)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import py7zr
from lxml import etree

from . import ExecuteError, _state
from .sharing import XSI

#: Never packed into a service definition (tiledelta's state, local caches, secrets).
SKIP = {".tiledelta", "cache", "cache.mbtiles", ".env", "publish", "__pycache__"}
PUBLISH_TASK = "System/PublishingTools/GPServer/Publish Service Definition"


def _fail(tool: str, message: str) -> ExecuteError:
    from . import AddError

    AddError(message)
    return ExecuteError(f"{message}\nFailed to execute ({tool}).")


def check_draft(data: bytes, where: str) -> etree._Element:
    """The draft parsed namespace-aware, every ``xsi:type`` value's prefix bound."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise _fail("StageService", f"ERROR 001272: {where} is not a valid draft: {exc}") from None
    if etree.QName(root).localname != "SVCManifest":
        raise _fail("StageService", f"ERROR 001272: {where}: no SVCManifest")
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        value = el.get(f"{{{XSI}}}type")
        if value and ":" in value and value.split(":", 1)[0] not in el.nsmap:
            raise _fail(
                "StageService",
                f"ERROR 001272: {where}: the prefix {value.split(':', 1)[0]!r} of "
                f"xsi:type={value!r} on <{etree.QName(el).localname}> is not declared; "
                "the draft is corrupt",
            )
    return root


def _staged(data: bytes, where: str) -> bytes:
    """The draft's bytes with its top-level ``State`` set to staged, in the draft's own
    encoding (UTF-8, with or without a byte-order mark, or UTF-16) and layout."""
    codec = "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"
    text = data.decode(codec)
    new, n = re.subn(
        r"(<State>\s*)esriSDState_Draft(\s*</State>)", r"\1esriSDState_Staged\2", text, count=1
    )
    if n != 1:
        raise _fail("StageService", f"ERROR 001272: {where}: no draft State to stage")
    return new.encode(codec)


def _text(root: etree._Element, *path: str) -> str | None:
    el = root
    for p in path:
        nxt = next(
            (c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == p), None
        )
        if nxt is None:
            return None
        el = nxt
    return (el.text or "").strip()


def _config_properties(root: etree._Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for el in root.iter():
        if isinstance(el.tag, str) and etree.QName(el).localname == "ConfigurationProperties":
            for prop in el.iter():
                if (
                    isinstance(prop.tag, str)
                    and etree.QName(prop).localname == "PropertySetProperty"
                ):
                    kv = {
                        etree.QName(c).localname: (c.text or "")
                        for c in prop
                        if isinstance(c.tag, str)
                    }
                    if "Key" in kv:
                        out[kv["Key"]] = kv.get("Value", "")
            break
    return out


def StageService(  # noqa: N802
    in_service_definition_draft: str,
    out_service_definition: str,
    staging_version: int | None = None,
) -> str:
    """Stage a draft into a service definition: a 7-Zip archive with ``manifest.xml``,
    ``serviceconfiguration.json`` and the data (the map's home folder, under ``p30/``)."""
    draft = Path(in_service_definition_draft)
    out = Path(out_service_definition)
    if draft.suffix.lower() != ".sddraft" or not draft.is_file():
        raise _fail(
            "StageService", f"ERROR 000732: Service Definition Draft: {draft} does not exist"
        )
    if out.suffix.lower() != ".sd":
        raise _fail("StageService", f"ERROR 000814: {out}: the output must be a .sd file")
    if out.exists():
        raise _fail(
            "StageService", f"ERROR 000725: Service Definition: Dataset {out} already exists."
        )
    data = draft.read_bytes()
    root = check_draft(data, str(draft))
    if _text(root, "State") != "esriSDState_Draft":
        raise _fail("StageService", f"ERROR 001272: {draft}: the draft was already staged")
    name = _text(root, "Configurations", "SVCConfiguration", "Name") or ""
    if _text(root, "Configurations", "SVCConfiguration", "TypeName") != "MapServer" or not name:
        raise _fail("StageService", f"ERROR 001272: {draft}: not a map service draft")
    home = _text(root, "Resources", "SVCResource", "OnPremisePath") or ""
    if not home or not Path(home).is_dir():
        raise _fail("StageService", f"ERROR 001272: the map's project folder {home} is missing")
    props = _config_properties(root)
    manifest = _staged(data, str(draft))
    service: dict[str, Any] = {
        "serviceName": name,
        "type": "MapServer",
        "description": _text(root, "ItemInfo", "Description") or "",
        "capabilities": "Map,Query,Data",
        "properties": props,
    }
    config = {
        "folderName": _text(root, "Configurations", "SVCConfiguration", "ServerFolder") or "",
        "service": service,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_sd = Path(tmp) / out.name
        with py7zr.SevenZipFile(tmp_sd, "w") as z:
            z.writestr(manifest, "manifest.xml")
            z.writestr(json.dumps(config, indent=1).encode("utf-8"), "serviceconfiguration.json")
            for p in sorted(Path(home).rglob("*")):
                rel = p.relative_to(home)
                if rel.parts[0] in SKIP or p.suffix.lower() in (".sd", ".sddraft", ".ags"):
                    continue
                if p.is_file():
                    z.write(p, f"p30/{rel.as_posix()}")
        shutil.move(str(tmp_sd), out)
    from . import AddMessage

    AddMessage(f"Staged {name} into {out.name}")
    return str(out)


# ------------------------------------------------------------------------------------ upload


def _server_session(in_server: str) -> tuple[str, str, str]:
    """(server URL, server token, referer) for a federated server URL or a .ags file."""
    s = _state.session
    if in_server.lower().endswith(".ags"):
        from .mp import read_ags

        doc = read_ags(in_server)
        url = doc["url"]
        if not doc.get("username") or not doc.get("password"):
            raise _fail("UploadServiceDefinition", f"{in_server}: the connection saved no sign-in")
        body = httpx.post(
            f"{url}/tokens/generateToken",
            data={
                "username": doc["username"],
                "password": doc["password"],
                "client": "referer",
                "referer": url,
                "f": "json",
            },
            timeout=30,
        ).json()
        if not body.get("token"):
            raise _fail("UploadServiceDefinition", f"{url}: the server refused the saved sign-in")
        return url, body["token"], url
    url = in_server.rstrip("/")
    from . import GetSigninToken

    tok = GetSigninToken()
    if tok is None or not s.portal_url:
        raise _fail(
            "UploadServiceDefinition",
            "ERROR 001370: You must be signed in to the portal to publish to a federated server",
        )
    body = httpx.post(
        f"{s.portal_url.rstrip('/')}/sharing/rest/generateToken",
        data={"token": tok["token"], "serverUrl": url, "f": "json"},
        headers={"Referer": tok["referer"] or ""},
        timeout=30,
    ).json()
    if not body.get("token"):
        raise _fail("UploadServiceDefinition", f"{url} is not federated with {s.portal_url}")
    return url, body["token"], tok["referer"] or ""


def UploadServiceDefinition(  # noqa: N802
    in_sd_file: str,
    in_server: str,
    in_service_name: str | None = None,
    in_cluster: str | None = None,
    in_folder_type: str = "FROM_SERVICE_DEFINITION",
    in_folder: str | None = None,
    in_startupType: str = "STARTED",  # noqa: N803 - arcpy's keyword
    in_override: str = "USE_DEFINITION",
    in_my_contents: str = "NO_SHARE_ONLINE",
    in_public: str = "PRIVATE",
    in_organization: str = "NO_SHARE_ORGANIZATION",
    in_groups: list[str] | None = None,
) -> dict[str, Any]:
    """Upload ``in_sd_file`` (a 7-Zip .sd) and publish it with Publish Service Definition."""
    sd = Path(in_sd_file)
    if not sd.is_file() or not py7zr.is_7zfile(sd):
        raise _fail("UploadServiceDefinition", f"ERROR 000732: {sd} is not a service definition")
    if in_startupType not in ("STARTED", "STOPPED"):
        raise _fail("UploadServiceDefinition", "in_startupType must be STARTED or STOPPED")
    url, token, referer = _server_session(in_server)
    headers = {"Referer": referer, "X-Esri-Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=120, headers=headers) as http, open(sd, "rb") as fh:
        up = http.post(
            f"{url}/admin/uploads/upload", data={"f": "json"}, files={"itemFile": (sd.name, fh)}
        )
        body = up.json()
        item = (body.get("item") or {}).get("itemID")
        if not item:
            raise _fail("UploadServiceDefinition", f"the upload was refused: {body}")
        job = http.post(
            f"{url}/rest/services/{PUBLISH_TASK}/submitJob",
            data={"in_sdp_id": item, "f": "json"},
        ).json()
        job_id = job.get("jobId")
        if not job_id:
            raise _fail("UploadServiceDefinition", f"the publishing job was refused: {job}")
        deadline = time.monotonic() + 600
        from . import AddMessage

        seen = 0
        while True:
            status = http.get(
                f"{url}/rest/services/{PUBLISH_TASK}/jobs/{job_id}", params={"f": "json"}
            ).json()
            msgs = status.get("messages") or []
            for m in msgs[seen:]:
                AddMessage(m.get("description", ""))
            seen = len(msgs)
            state = status.get("jobStatus")
            if state == "esriJobSucceeded":
                return {"jobId": job_id, "itemId": item}
            if state in ("esriJobFailed", "esriJobCancelled", "esriJobTimedOut", "esriJobDeleted"):
                text = "; ".join(m.get("description", "") for m in msgs)
                raise _fail(
                    "UploadServiceDefinition", f"ERROR 001487: publishing failed ({state}): {text}"
                )
            if time.monotonic() > deadline:
                raise _fail("UploadServiceDefinition", "publishing did not finish in 10 minutes")
            time.sleep(0.05)
