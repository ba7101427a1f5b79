"""Multipart uploads: the part plan and the resume record kept under ``.tiledelta/uploads/``.

ArcGIS takes large files in parts: the Administrator API with ``uploads/register`` →
``uploads/{id}/uploadPart`` → ``uploads/{id}/commit``, a portal with ``addItem`` /
``update`` (``multipart=true``) → ``items/{id}/addPart`` → ``items/{id}/commit``. Parts
are numbered from 1. The HTTP calls live in :mod:`tiledelta.publish.arcgis.client`; this
module only plans the parts and remembers, per file and destination, the upload id and
the parts the server acknowledged, so that a killed upload resumes with the missing parts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Default part size. Esri's portal guidance is to send files above about 25 MB in
#: parts, and its ``addPart`` requires every part but the last to be at least 5 MB;
#: 20 MB parts stay under the usual 25-30 MB single-request limits (web adaptor, IIS
#: ``maxAllowedContentLength`` defaults near 28.6 MB) and keep the part count low.
DEFAULT_PART_BYTES = 20 * 1024 * 1024
#: The smallest part a portal accepts (all parts but the last).
MIN_PART_BYTES = 5 * 1024 * 1024
#: Part numbers run from 1 to this (portal ``addPart``).
MAX_PARTS = 10_000


def part_count(size: int, part_bytes: int) -> int:
    """How many parts a file of ``size`` bytes needs (at least 1)."""
    return max(1, math.ceil(size / part_bytes))


def read_part(path: Path, number: int, part_bytes: int) -> bytes:
    """Part ``number`` (from 1) of ``path``."""
    with open(path, "rb") as fh:
        fh.seek((number - 1) * part_bytes)
        return fh.read(part_bytes)


@dataclass
class UploadRecord:
    """What is known of one multipart upload of one file to one destination."""

    kind: str  # "admin" (server uploads) or "item" (portal item)
    target: str  # server URL, or portal URL + item/update target
    file: str
    size: int
    mtime_ns: int
    part_bytes: int
    upload_id: str = ""  # the admin upload's itemID, or the portal item id
    done: list[int] = field(default_factory=list)

    def matches(self, path: Path, part_bytes: int) -> bool:
        st = path.stat()
        return (self.size, self.mtime_ns, self.part_bytes) == (
            st.st_size,
            st.st_mtime_ns,
            part_bytes,
        )


class ResumeStore:
    """Upload records as small JSON files in ``folder`` (one per file and destination).

    Written atomically (temp file and ``os.replace``), so a kill leaves the previous
    record. ``None`` as folder keeps nothing (no resume).
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None

    def _path(self, kind: str, target: str, file: Path) -> Path | None:
        if self.folder is None:
            return None
        key = hashlib.sha256(f"{kind}\n{target}\n{file.resolve()}".encode()).hexdigest()[:24]
        return self.folder / f"{kind}-{key}.json"

    def load(self, kind: str, target: str, file: Path, part_bytes: int) -> UploadRecord | None:
        """The record of an unfinished upload of ``file`` that still matches it, or None."""
        p = self._path(kind, target, file)
        if p is None or not p.is_file():
            return None
        try:
            rec = UploadRecord(**json.loads(p.read_text("utf-8")))
        except (ValueError, TypeError):
            return None
        return rec if rec.upload_id and rec.matches(file, part_bytes) else None

    def new(self, kind: str, target: str, file: Path, part_bytes: int) -> UploadRecord:
        st = file.stat()
        return UploadRecord(
            kind, target, str(file.resolve()), st.st_size, st.st_mtime_ns, part_bytes
        )

    def save(self, rec: UploadRecord) -> None:
        p = self._path(rec.kind, rec.target, Path(rec.file))
        if p is None:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec)), "utf-8")
        os.replace(tmp, p)

    def clear(self, rec: UploadRecord) -> None:
        p = self._path(rec.kind, rec.target, Path(rec.file))
        if p is not None:
            p.unlink(missing_ok=True)
