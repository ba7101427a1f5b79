"""Large uploads against the emulator, which refuses single requests above its limits as
ArcGIS does: the Administrator API's register / uploadPart / commit, a portal item's
addItem or update with multipart=true / addPart / commit / status; progress, a failed part
sent again, a killed upload that resumes with only the missing parts, and roles."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.emulator import Emulator

from tiledelta.credentials import Secret
from tiledelta.publish.arcgis.client import ArcGISClient, ArcGISError

USER, PASSWORD = "publisher", "s3cret-Upl0ad-Pa55!"
MB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A 60 MB file (random bytes, so no layer can compress it away)."""
    f = tmp_path_factory.mktemp("big") / "County.sd"
    f.write_bytes(os.urandom(60 * MB))
    return f


@pytest.fixture
def emu(tmp_path: Path):
    with Emulator(tmp_path / "server", username=USER, password=PASSWORD, portal=True) as e:
        yield e


def client_for(emu: Emulator) -> ArcGISClient:
    return ArcGISClient(emu.url, USER, Secret(PASSWORD), portal=emu.portal_url, warn=lambda m: None)


def committed(emu: Emulator, upload_id: str) -> bytes:
    item = json.loads((emu.root / "uploads" / upload_id / "item.json").read_text())
    assert item["committed"] is True
    return (emu.root / "uploads" / upload_id / item["itemName"]).read_bytes()


def test_a_60_mb_admin_upload_goes_in_parts_with_progress(emu, big, tmp_path) -> None:
    seen: list[tuple[int, int]] = []
    with client_for(emu) as client:
        with pytest.raises(ArcGISError, match="too large .HTTP 413.") as err:
            client.upload(big, part_bytes=100 * MB)  # one request: refused like ArcGIS
        assert "\n" not in str(err.value)
        upload_id = client.upload(
            big, part_bytes=20 * MB, progress=lambda d, t: seen.append((d, t))
        )
    parts = [r for r in emu.requests if r.path.endswith(f"/uploads/{upload_id}/uploadPart")]
    assert [r.params["partNumber"] for r in parts] == ["1", "2", "3"]
    assert all(r.status == 200 for r in parts)
    commit = [r for r in emu.requests if r.path.endswith(f"/uploads/{upload_id}/commit")]
    assert commit[0].params["parts"] == "1,2,3"
    assert seen[-1] == (60 * MB, 60 * MB)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 4
    assert sha(committed(emu, upload_id)) == sha(big.read_bytes())


def test_a_failed_part_is_sent_again(emu, big) -> None:
    emu.faults.fail_next_parts = 1
    with client_for(emu) as client:
        upload_id = client.upload(big, part_bytes=24 * MB)
    numbers = [
        r.params["partNumber"]
        for r in emu.requests
        if r.path.endswith(f"/uploads/{upload_id}/uploadPart")
    ]
    assert numbers == ["1", "1", "2", "3"]
    assert sha(committed(emu, upload_id)) == sha(big.read_bytes())


CHILD = """
import os, sys
from pathlib import Path
from tiledelta.credentials import Secret
from tiledelta.publish.arcgis.client import ArcGISClient
url, user, path, state = sys.argv[1:5]
c = ArcGISClient(url, user, Secret(os.environ["TD_TEST_PASSWORD"]), warn=lambda m: None)
c.upload(Path(path), part_bytes=5 * 1024 * 1024, resume_dir=Path(state),
         progress=lambda d, t: print(d, t, flush=True))
print("done", flush=True)
"""


def test_a_killed_upload_resumes_with_only_the_missing_parts(emu, big, tmp_path) -> None:
    state = tmp_path / ".tiledelta" / "uploads"
    env = {**os.environ, "TD_TEST_PASSWORD": PASSWORD}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, emu.url, USER, str(big), str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    lines = [child.stdout.readline() for _ in range(4)]  # the start and three parts
    child.kill()
    child.wait(timeout=30)
    assert all(line.split()[1] == str(60 * MB) for line in lines)
    uploads = [d for d in (emu.root / "uploads").iterdir() if (d / "item.json").is_file()]
    assert len(uploads) == 1
    upload_id = uploads[0].name
    held = sorted(int(p.name) for p in (uploads[0] / "parts").iterdir())
    assert 3 <= len(held) < 12, held  # killed part-way
    assert list(state.glob("admin-*.json"))  # the resume record
    n = len(emu.requests)
    with client_for(emu) as client:
        again = client.upload(big, part_bytes=5 * MB, resume_dir=state)
    assert again == upload_id  # the same upload, not a new one
    resent = [
        int(r.params["partNumber"]) for r in emu.requests[n:] if r.path.endswith("/uploadPart")
    ]
    assert sorted(resent) == sorted(set(range(1, 13)) - set(held))
    assert not any(r.path.endswith("/uploads/register") for r in emu.requests[n:])
    assert sha(committed(emu, upload_id)) == sha(big.read_bytes())
    assert not list(state.glob("admin-*.json"))  # cleared once committed


def test_a_60_mb_portal_item_goes_in_parts(emu, big) -> None:
    seen: list[int] = []
    with client_for(emu) as client:
        with pytest.raises(ArcGISError, match="HTTP 413"):
            client.add_item(big, type="Service Definition", title="x", part_bytes=100 * MB)
        item_id = client.add_item(
            big,
            type="Service Definition",
            title="County SD",
            part_bytes=20 * MB,
            progress=lambda d, t: seen.append(d),
        )
        assert client.item_status(item_id)["status"] == "completed"
    item = emu.portal_item(item_id)
    assert sha(item.data) == sha(big.read_bytes())
    assert (item.info()["name"], item.info()["size"]) == ("County.sd", 60 * MB)
    adds = [r for r in emu.requests if r.path.endswith(f"/items/{item_id}/addPart")]
    assert [r.params["partNum"] for r in adds] == ["1", "2", "3"]
    assert seen[-1] == 60 * MB


def test_an_existing_item_gets_a_large_file_by_a_multipart_update(emu, big) -> None:
    item_id = emu.portal_add_item(USER, "Compact Tile Package", "County basemap")
    with client_for(emu) as client:
        client.upload_item_file(item_id, big, part_bytes=20 * MB)
        # Parts below the portal's 5 MB minimum (but the last) are refused at commit.
        small = emu.portal_add_item(USER, "Compact Tile Package", "small parts")
        with pytest.raises(ArcGISError, match="smaller than"):
            client.upload_item_file(small, big, part_bytes=4 * MB)
    assert sha(emu.portal_item(item_id).data) == sha(big.read_bytes())
    update = [r for r in emu.requests if r.path.endswith(f"/items/{item_id}/update")]
    assert update[0].params["multipart"] == "true" and "file" not in update[0].params


def test_roles_a_publisher_uploads_but_cannot_read_admin_statistics(tmp_path, big) -> None:
    publisher = Emulator(tmp_path / "s", username=USER, password=PASSWORD, role="publisher")
    with publisher as emu, client_for_server(emu) as client:
        with pytest.raises(ArcGISError, match="not authorized") as err:
            client.get("admin/services/System/CachingTools.GPServer/statistics")
        assert err.value.code == 403
        assert client.caching_busy() == 0  # the busy check is skipped, not fatal
        upload_id = client.upload(big, part_bytes=20 * MB)  # publishers may upload
        assert sha(committed(emu, upload_id)) == sha(big.read_bytes())
        with pytest.raises(ArcGISError, match="not authorized"):
            client.get("admin/uploads")
    admin = Emulator(tmp_path / "a", username=USER, password=PASSWORD)
    with admin as emu, client_for_server(emu) as client:
        body = client.get("admin/services/System/CachingTools.GPServer/statistics")
        assert body["summary"]["busy"] == 0
        assert "items" in client.get("admin/uploads")


def client_for_server(emu: Emulator) -> ArcGISClient:
    return ArcGISClient(emu.url, USER, Secret(PASSWORD), warn=lambda m: None)


CHILD_ITEM = """
import os, sys
from pathlib import Path
from tiledelta.credentials import Secret
from tiledelta.publish.arcgis.client import ArcGISClient
url, portal, user, path, state = sys.argv[1:6]
c = ArcGISClient(url, user, Secret(os.environ["TD_TEST_PASSWORD"]), portal=portal,
                 warn=lambda m: None)
c.add_item(Path(path), type="Service Definition", title="County SD",
           part_bytes=5 * 1024 * 1024, resume_dir=Path(state),
           progress=lambda d, t: print(d, t, flush=True))
"""


def test_a_killed_portal_upload_resumes_on_the_same_item(emu, big, tmp_path) -> None:
    state = tmp_path / "uploads-state"
    env = {**os.environ, "TD_TEST_PASSWORD": PASSWORD}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_ITEM, emu.url, emu.portal_url, USER, str(big), str(state)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    for _ in range(4):
        child.stdout.readline()
    child.kill()
    child.wait(timeout=30)
    (item_id,) = emu.portal_items
    record = json.loads(next(state.glob("item-*.json")).read_text())
    assert record["upload_id"] == item_id and 3 <= len(record["done"]) < 12
    n = len(emu.requests)
    with client_for(emu) as client:
        assert client.item_status(item_id)["status"] == "partial"
        again = client.add_item(
            big, type="Service Definition", title="County SD", part_bytes=5 * MB, resume_dir=state
        )
    assert again == item_id and set(emu.portal_items) == {item_id}
    resent = [int(r.params["partNum"]) for r in emu.requests[n:] if r.path.endswith("/addPart")]
    assert sorted(resent) == sorted(set(range(1, 13)) - set(record["done"]))
    assert sha(emu.portal_item(item_id).data) == sha(big.read_bytes())
