"""Multipart uploads, as ArcGIS takes large files: the Administrator API's
``uploads/register`` → ``uploads/{id}/uploadPart`` → ``uploads/{id}/commit`` (with
``uploads/{id}/parts``), and a portal item's ``addItem``/``update`` with
``multipart=true`` → ``items/{id}/addPart`` → ``items/{id}/commit`` → ``status``.

Parts are stored as files and assembled in part order at commit; a part sent again under
the same number replaces the earlier one. What is stricter or more lenient than ArcGIS is
in ``docs/emulator.md`` ("Uploads in parts").
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from .model import (
    UPLOAD_ID_RE,
    Faults,
    Request,
    Response,
    admin_error,
    json_response,
    rest_error,
    safe_filename,
)

#: Portal part numbers run from 1 to this.
MAX_PART_NUMBER = 10_000
PARTS_DIR = "parts"


def _part_number(value: str | None) -> int | None:
    try:
        n = int(str(value or "").strip())
    except ValueError:
        return None
    return n if 1 <= n <= MAX_PART_NUMBER else None


def stored_parts(folder: Path) -> list[int]:
    """The part numbers stored in ``folder/parts``, sorted."""
    d = folder / PARTS_DIR
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def assemble(folder: Path, numbers: list[int], out: Path) -> int:
    """Write the parts ``numbers`` (in that order) of ``folder`` into ``out``; its size."""
    tmp = out.with_name(out.name + ".assembling")
    size = 0
    with open(tmp, "wb") as fh:
        for n in numbers:
            with open(folder / PARTS_DIR / str(n), "rb") as part:
                size += fh.write(part.read())
    tmp.replace(out)
    shutil.rmtree(folder / PARTS_DIR, ignore_errors=True)
    return size


class MultipartMixin:
    """Upload parts for :class:`~support.emulator.server.Emulator` (server and portal)."""

    root: Path
    faults: Faults
    min_part_bytes: int
    _lock: threading.RLock

    def _take_part_failure(self) -> bool:
        with self._lock:
            if self.faults.fail_next_parts > 0:
                self.faults.fail_next_parts -= 1
                return True
        return False

    # -- the Administrator API ---------------------------------------------------------------
    def _register_upload(self, req: Request) -> dict:
        name = safe_filename(req.params.get("itemName", "").strip())
        if not req.params.get("itemName", "").strip():
            return admin_error(400, ["itemName is required to register an upload."])
        item_id = "i" + uuid.uuid4().hex
        folder = self.root / "uploads" / item_id
        (folder / PARTS_DIR).mkdir(parents=True)
        item = {
            "itemID": item_id,
            "itemName": name,
            "description": req.params.get("description", ""),
            "pathOnServer": str(folder / name),
            "date": int(time.time() * 1000),
            "committed": False,
            "size": 0,
        }
        (folder / "item.json").write_text(json.dumps(item), "utf-8")
        return {"status": "success", "item": item}

    def _upload_parts(self, folder: Path) -> dict:
        return {"status": "success", "parts": [str(n) for n in stored_parts(folder)]}

    def _upload_part(
        self,
        req: Request,
        folder: Path,
        number_field: str = "partNumber",
        file_field: str = "partFile",
    ) -> dict:
        item = json.loads((folder / "item.json").read_text("utf-8"))
        if item.get("committed"):
            return admin_error(400, [f"Item {item['itemID']} is already committed."])
        number = _part_number(req.params.get(number_field))
        if number is None:
            return admin_error(400, [f"{number_field} must be an integer from 1 to 10000."])
        if file_field not in req.files:
            return admin_error(400, [f"The multipart field {file_field} (the part) is missing."])
        if self._take_part_failure():
            return admin_error(500, [f"Part {number} could not be stored (injected fault)."])
        (folder / PARTS_DIR).mkdir(exist_ok=True)
        (folder / PARTS_DIR / str(number)).write_bytes(req.files[file_field][1])
        return {"status": "success"}

    # -- a GP service's uploads (rest/services/System/CachingTools/GPServer/uploads) -----
    def _gp_uploads(self, req: Request, rest: list[str]) -> Response:
        """A GP service's uploads: ``upload`` (field ``file``), ``register``,
        ``{id}/uploadPart`` (``partId``, ``file``), ``{id}/commit``, ``{id}``; REST
        error shapes and ``success`` answers."""
        p = req.pretty

        def answer(body: dict) -> Response:
            if body.get("status") == "error":
                msgs = body.get("messages") or ["error"]
                return json_response(rest_error(int(body.get("code") or 400), msgs[0], msgs[1:]), p)
            body = {k: v for k, v in body.items() if k != "status"}
            return json_response({"success": True, **body}, p)

        if rest == ["upload"] and req.method == "POST":
            if "file" not in req.files:
                return json_response(rest_error(400, "The file is missing."), p)
            fname, data = req.files["file"]
            reg = self._register_upload(replace(req, params={**req.params, "itemName": fname}))
            folder = self.root / "uploads" / reg["item"]["itemID"]
            (folder / PARTS_DIR / "1").write_bytes(data)
            return answer(self._commit_upload(replace(req, params={}), folder))
        if rest == ["register"] and req.method == "POST":
            return answer(self._register_upload(req))
        if (
            rest
            and UPLOAD_ID_RE.fullmatch(rest[0])
            and (self.root / "uploads" / rest[0] / "item.json").is_file()
        ):
            folder = self.root / "uploads" / rest[0]
            if len(rest) == 1:
                return json_response({"item": json.loads((folder / "item.json").read_text())}, p)
            if rest[1:] == ["parts"]:
                return answer(self._upload_parts(folder))
            if rest[1:] == ["uploadPart"] and req.method == "POST":
                return answer(self._upload_part(req, folder, "partId", "file"))
            if rest[1:] == ["commit"] and req.method == "POST":
                return answer(self._commit_upload(req, folder))
        return json_response(rest_error(400, "Invalid URL", [req.path]), p)

    def _commit_upload(self, req: Request, folder: Path) -> dict:
        meta = folder / "item.json"
        item = json.loads(meta.read_text("utf-8"))
        if item.get("committed"):
            return admin_error(400, [f"Item {item['itemID']} is already committed."])
        have = stored_parts(folder)
        listed = [
            p.strip().strip('"').rsplit(".", 1)[-1] for p in req.params.get("parts", "").split(",")
        ]
        listed = [p for p in listed if p]
        if listed:
            if not all(p.isdigit() for p in listed):
                return admin_error(400, [f"parts {req.params.get('parts')!r}: not part numbers."])
            numbers = [int(p) for p in listed]
        else:
            numbers = have
        missing = sorted(set(numbers) - set(have))
        if not numbers or missing:
            return admin_error(400, [f"Cannot commit: parts {missing or '(none)'} not uploaded."])
        size = assemble(folder, numbers, folder / item["itemName"])
        item.update(committed=True, size=size)
        meta.write_text(json.dumps(item), "utf-8")
        return {"status": "success", "item": item}

    # -- portal items ------------------------------------------------------------------------
    def _portal_add_part(self, req: Request, folder: Path, item: dict) -> dict:
        if item.get("uploadStatus") != "partial":
            return rest_error(400, "The item is not being uploaded in parts (multipart=true).")
        number = _part_number(req.params.get("partNum"))
        if number is None:
            return rest_error(400, "partNum must be an integer from 1 to 10000.")
        if "file" not in req.files:
            return rest_error(400, "The part (file) is missing.")
        if self._take_part_failure():
            return rest_error(500, "Unable to add the part (injected fault).")
        (folder / PARTS_DIR).mkdir(exist_ok=True)
        (folder / PARTS_DIR / str(number)).write_bytes(req.files["file"][1])
        return {"success": True, "id": item["id"]}

    def _portal_commit(self, folder: Path, item: dict) -> tuple[dict, dict | None]:
        """(answer, the item's new data file as {"name","size"} or None on error)."""
        if item.get("uploadStatus") != "partial":
            return rest_error(400, "The item has no multipart upload to commit."), None
        have = stored_parts(folder)
        if not have or have != list(range(1, len(have) + 1)):
            return rest_error(400, f"Cannot commit: parts must be 1..n, got {have}."), None
        sizes = [(folder / PARTS_DIR / str(n)).stat().st_size for n in have]
        small = [n for n, sz in zip(have[:-1], sizes[:-1], strict=True) if sz < self.min_part_bytes]
        if small:
            msg = f"Parts {small} are smaller than {self.min_part_bytes} bytes (all but the last)."
            return rest_error(400, "Unable to commit the item.", [msg]), None
        name = safe_filename(item.get("pendingFilename") or "data.bin")
        data_dir = folder / "data"
        staged = folder / f"data.{uuid.uuid4().hex[:8]}"
        staged.mkdir()
        size = assemble(folder, have, staged / name)
        shutil.rmtree(data_dir, ignore_errors=True)
        staged.rename(data_dir)
        return {"success": True, "id": item["id"]}, {"name": name, "size": size}


def parse_extent(text: str) -> tuple[float, float, float, float] | None:
    """``xmin,ymin,xmax,ymax`` or an extent JSON, as ``importTiles`` takes it."""
    text = (text or "").strip()
    if not text:
        return None
    if text.startswith("{"):
        d = json.loads(text)
        return (float(d["xmin"]), float(d["ymin"]), float(d["xmax"]), float(d["ymax"]))
    parts = [float(v) for v in re.split(r"[,\s]+", text) if v]
    if len(parts) != 4:
        raise ValueError(f"extent {text!r}: give xmin,ymin,xmax,ymax")
    return (parts[0], parts[1], parts[2], parts[3])
