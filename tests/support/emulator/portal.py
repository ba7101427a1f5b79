"""The emulated Portal (``portal=True``): portal tokens, the federated token exchange, and
items whose thumbnail, data and fields can be read and updated (``docs/emulator.md``)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import (
    Request,
    Response,
    Token,
    content_type,
    json_response,
    redact,
    rest_error,
    safe_filename,
)
from .multipart import PARTS_DIR

#: Item fields an ``update`` call sets on the emulated portal item (others are recorded only).
PORTAL_ITEM_FIELDS = frozenset(
    {
        "title",
        "description",
        "snippet",
        "tags",
        "typeKeywords",
        "accessInformation",
        "licenseInfo",
        "culture",
        "url",
    }
)
LIST_FIELDS = frozenset({"tags", "typeKeywords"})
ITEM_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class PortalItem:
    """An item of the emulated portal: ``item.json``, its thumbnail and its data file.

    ``updates`` lists every ``update`` call it received (in memory): the form fields
    (secrets redacted), and name and size of the ``thumbnail`` and ``file`` parts.
    """

    id: str
    path: Path  # root/portal/items/<id>
    updates: list[dict[str, Any]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The item JSON, as the portal serves it."""
        return json.loads((self.path / "item.json").read_text("utf-8"))

    def save(self, item: dict[str, Any]) -> None:
        """Replace the item JSON (atomically)."""
        tmp = self.path / "item.json.tmp"
        tmp.write_text(json.dumps(item, indent=1), "utf-8")
        tmp.replace(self.path / "item.json")

    def _one_file(self, sub: str) -> Path | None:
        folder = self.path / sub
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return files[0] if files else None

    @property
    def thumbnail_path(self) -> Path | None:
        return self._one_file("thumbnail")

    @property
    def data_path(self) -> Path | None:
        return self._one_file("data")

    @property
    def thumbnail(self) -> bytes | None:
        """The thumbnail's bytes, or None."""
        f = self.thumbnail_path
        return f.read_bytes() if f else None

    @property
    def data(self) -> bytes | None:
        """The item's data file (e.g. an uploaded .tpkx), or None."""
        f = self.data_path
        return f.read_bytes() if f else None


def load_portal_items(root: Path) -> dict[str, PortalItem]:
    """The items kept under ``root/portal/items`` (the folder is created when missing)."""
    items = root / "portal" / "items"
    items.mkdir(parents=True, exist_ok=True)
    return {
        d.name: PortalItem(d.name, d)
        for d in sorted(items.iterdir())
        if ITEM_ID_RE.match(d.name) and (d / "item.json").is_file()
    }


class PortalMixin:
    """The portal part of :class:`~support.emulator.server.Emulator`.

    It uses the emulator's state (annotated below) and the token methods of
    :class:`~support.emulator.tokens.TokensMixin`.
    """

    root: Path
    username: str
    portal: bool
    portal_url: str
    url: str
    clock: Callable[[], float]
    portal_items: dict[str, PortalItem]
    _lock: threading.RLock
    _tokens: dict[str, Token]
    _portal_tokens: dict[str, Token]

    def portal_add_item(
        self,
        owner: str,
        type: str,
        title: str,
        **fields: Any,
    ) -> str:
        """Create a portal item owned by ``owner``; return its id (32 hex digits).

        ``fields`` may set other item fields (``description``, ``tags`` ...). Only
        items owned by the emulator's user can be updated or read through REST.
        """
        if not self.portal:
            raise RuntimeError("this emulator has no portal (start it with portal=True)")
        item_id = uuid.uuid4().hex
        folder = self.root / "portal" / "items" / item_id
        folder.mkdir(parents=True)
        now = int(self.clock() * 1000)
        item: dict[str, Any] = {
            "id": item_id,
            "owner": owner,
            "created": now,
            "modified": now,
            "title": title,
            "type": type,
            "typeKeywords": [],
            "name": None,
            "description": None,
            "snippet": None,
            "tags": [],
            "thumbnail": None,
            "url": None,
            "access": "private",
            "size": 0,
        }
        item.update(fields)
        it = PortalItem(item_id, folder)
        it.save(item)
        with self._lock:
            self.portal_items[item_id] = it
        return item_id

    def portal_item(self, item_id: str) -> PortalItem:
        """The portal item ``item_id`` (KeyError when there is none)."""
        return self.portal_items[item_id]

    def _portal(self, req: Request, seg: list[str]) -> Response:
        p = req.pretty
        if seg[:2] != ["sharing", "rest"]:
            return json_response(rest_error(404, "Not found", [req.path]), status=404)
        seg = seg[2:]
        if seg == ["generateToken"]:
            return json_response(self._portal_generate_token(req), p)
        if seg == ["info"]:
            return json_response(
                {
                    "owningSystemUrl": self.portal_url,
                    "authInfo": {
                        "tokenServicesUrl": f"{self.portal_url}/sharing/rest/generateToken",
                        "isTokenBasedSecurity": True,
                    },
                },
                p,
            )
        denied = self._check_token(req, self._portal_tokens)
        if denied == 499:
            return json_response(rest_error(499, "Token Required."), p)
        if denied == 498:
            return json_response(rest_error(498, "Invalid token."), p)
        # content/users/<user>/addItem
        if len(seg) == 4 and seg[:2] == ["content", "users"] and seg[3] == "addItem":
            if req.method != "POST":
                return json_response(rest_error(405, "addItem takes POST only."), p)
            if seg[2] != self.username:
                return json_response(
                    rest_error(403, "You do not have permissions to add items."), p
                )
            return json_response(self._portal_add_item_rest(req), p)
        # content/users/<user>/items/<id>[/update | /addPart | /commit | /status | /delete]
        if len(seg) in (5, 6) and seg[:2] == ["content", "users"] and seg[3] == "items":
            user, item_id, op = seg[2], seg[4], seg[5:]
            it, err = self._portal_lookup(item_id, user)
            if err is not None:
                return json_response(err, p)
            if op and op[0] in ("update", "addPart", "commit", "delete") and req.method != "POST":
                return json_response(rest_error(405, f"{op[0]} takes POST only."), p)
            if op == ["update"]:
                return json_response(self._portal_update(req, it), p)
            if op == ["addPart"]:
                return json_response(self._portal_add_part(req, it.path, it.info()), p)
            if op == ["commit"]:
                return json_response(self._portal_commit_item(req, it), p)
            if op == ["status"]:
                item = it.info()
                return json_response(
                    {"itemId": it.id, "status": item.get("uploadStatus") or "completed"}, p
                )
            if op == ["delete"]:
                with self._lock:
                    self.portal_items.pop(it.id, None)
                shutil.rmtree(it.path, ignore_errors=True)
                return json_response({"success": True, "itemId": it.id}, p)
            if not op:
                sharing = {"access": "private", "groups": []}
                return json_response({"item": it.info(), "sharing": sharing}, p)
        # content/items/<id>[/data | /info/<thumbnail path>]
        if len(seg) >= 3 and seg[:2] == ["content", "items"]:
            it, err = self._portal_lookup(seg[2], None)
            if err is not None:
                return json_response(err, p)
            rest = seg[3:]
            if not rest:
                return json_response(it.info(), p)
            if rest == ["data"]:
                f = it.data_path
                if f is None:
                    return json_response(rest_error(400, "Item has no data.", [it.id]), p)
                data = f.read_bytes()
                return Response(
                    200,
                    data,
                    content_type(data),
                    {"Content-Disposition": f'attachment; filename="{f.name}"'},
                )
            if rest[:1] == ["info"] and rest[1:] == (it.info().get("thumbnail") or "").split("/"):
                data = it.thumbnail
                if data is not None:
                    return Response(200, data, content_type(data))
            return json_response(rest_error(404, "Not found", [req.path]), status=404)
        return json_response(
            rest_error(400, "Not implemented by the emulator's portal.", [req.path]), p
        )

    def _portal_lookup(
        self, item_id: str, user: str | None
    ) -> tuple[PortalItem, None] | tuple[None, dict]:
        """The item, or the error a private item someone else owns gets."""
        with self._lock:
            it = self.portal_items.get(item_id)
        if it is None or not ITEM_ID_RE.match(item_id):
            return None, rest_error(400, "Item does not exist or is inaccessible.", [item_id])
        owner = it.info().get("owner")
        if owner != self.username or (user is not None and user != owner):
            return None, rest_error(
                403,
                "You do not have permissions to access this resource or perform this operation.",
            )
        return it, None

    def _portal_generate_token(self, req: Request) -> dict:
        def fail(detail: str, code: int = 400) -> dict:
            return rest_error(code, "Unable to generate token.", [detail])

        if req.method != "POST":
            return fail("generateToken must be called with POST; GET is not enabled.", 405)
        params = req.params
        server_url = params.get("serverUrl", "").strip().rstrip("/")
        if params.get("username") or params.get("password"):
            if not self._credentials_ok(params.get("username", ""), params.get("password", "")):
                return fail("Invalid username or password.")
            if server_url:
                return fail("Sign in to the portal first, then exchange its token (serverUrl).")
            return self._issue_token(req, self._portal_tokens, fail)
        # The federated exchange: a portal token (param or header) + serverUrl -> server token.
        if not req.token:
            return rest_error(499, "Token Required.")
        if not server_url:
            return fail("Give username and password, or token and serverUrl.")
        if self._check_token(req, self._portal_tokens) is not None:
            return rest_error(498, "Invalid token.")
        if server_url != self.url and not server_url.startswith(self.url + "/"):
            return fail(f"{server_url} is not a server federated with this portal.")
        with self._lock:
            portal_tok = self._portal_tokens[req.token]
        return self._issue_token(req, self._tokens, fail, inherit=portal_tok)

    def _portal_add_item_rest(self, req: Request) -> dict:
        """``addItem``: a file in one request, or ``multipart=true`` + ``filename`` (parts
        follow with ``addPart`` and ``commit``)."""
        params = req.params
        multipart = params.get("multipart", "").lower() == "true"
        if not params.get("type") or not params.get("title"):
            return rest_error(400, "Unable to add item.", ["type and title are required."])
        if multipart and not params.get("filename"):
            return rest_error(400, "Unable to add item.", ["multipart needs filename."])
        if not multipart and "file" not in req.files:
            return rest_error(400, "Unable to add item.", ["No file (or multipart=true) given."])
        item_id = self.portal_add_item(self.username, params["type"], params["title"])
        it = self.portal_items[item_id]
        answer = self._portal_update(req, it)
        if answer.get("success"):
            return {"success": True, "id": item_id, "folder": ""}
        shutil.rmtree(it.path, ignore_errors=True)
        self.portal_items.pop(item_id, None)
        return answer

    def _portal_commit_item(self, req: Request, it: PortalItem) -> dict:
        item = it.info()
        answer, data = self._portal_commit(it.path, item)
        if data is None:
            return answer
        for key, value in redact(req.params).items():
            if key in PORTAL_ITEM_FIELDS:
                item[key] = (
                    [v.strip() for v in value.split(",") if v.strip()]
                    if key in LIST_FIELDS
                    else value
                )
        item["name"], item["size"] = data["name"], data["size"]
        item["uploadStatus"] = "completed"
        item.pop("pendingFilename", None)
        item["modified"] = self._now_ms()
        it.save(item)
        with self._lock:
            it.updates.append(
                {
                    "time": self._now_ms(),
                    "fields": {"commit": "true"},
                    "thumbnail": None,
                    "file": data,
                }
            )
        return answer

    def _portal_update(self, req: Request, it: PortalItem) -> dict:
        item = it.info()
        record: dict[str, Any] = {
            "time": self._now_ms(),
            "fields": {},
            "thumbnail": None,
            "file": None,
        }
        for key, value in redact(req.params).items():
            if key in ("f", "token"):
                continue
            record["fields"][key] = value
            if key in PORTAL_ITEM_FIELDS:
                item[key] = (
                    [v.strip() for v in value.split(",") if v.strip()]
                    if key in LIST_FIELDS
                    else value
                )
        if "thumbnail" in req.files:
            fname, data = req.files["thumbnail"]
            if not data:
                return rest_error(400, "The thumbnail file is empty.")
            name = safe_filename(fname or "thumbnail.png")
            folder = it.path / "thumbnail"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / name).write_bytes(data)
            item["thumbnail"] = f"thumbnail/{name}"
            record["thumbnail"] = {"name": name, "size": len(data)}
        if req.params.get("multipart", "").lower() == "true":
            if not req.params.get("filename"):
                return rest_error(400, "Unable to update item.", ["multipart needs filename."])
            shutil.rmtree(it.path / PARTS_DIR, ignore_errors=True)
            item["uploadStatus"] = "partial"
            item["pendingFilename"] = req.params["filename"]
        elif "file" in req.files:
            fname, data = req.files["file"]
            name = safe_filename(fname or "data.bin")
            folder = it.path / "data"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / name).write_bytes(data)
            item["name"], item["size"] = name, len(data)
            record["file"] = {"name": name, "size": len(data)}
        item["modified"] = self._now_ms()
        it.save(item)
        with self._lock:
            it.updates.append(record)
        return {"success": True, "id": it.id}
