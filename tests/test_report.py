"""Run reports: report.html and the change map of a real update on the sample county."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyproj
import pytest
from PIL import Image

from tiledelta import sample
from tiledelta.api import init_project, load_project
from tiledelta.grid import tile_bounds
from tiledelta.project import Project
from tiledelta.runs.report import (
    COLOR_NEW,
    COLOR_OLD,
    COLOR_TILE,
    changemap_frame,
    find_run,
    latest_report,
    render_html,
    report_text,
    write_report,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The sample county seeded at levels 13-16, edited, then updated."""
    root = tmp_path_factory.mktemp("report") / "county"
    sample.generate(root)
    init_project(root, style=root / "style.xml", levels="13-16", force=True)
    p = Project.load(root)
    p = p.updated(render={"processes": 1})
    p.save()
    from tiledelta.api import seed, update

    seeded = seed(load_project(root))
    sample.apply_edits(root)
    updated = update(load_project(root))
    return {
        "root": root,
        "seed": Path(seeded["run_folder"]),
        "update": Path(updated["run_folder"]),
        "result": updated,
    }


class _Tables(HTMLParser):
    """Rows marked data-layer / data-level, as lists of cell texts; and links, images."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.links: list[str] = []
        self.images: list[str] = []
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and ("data-layer" in a or "data-level" in a):
            key = "layer:" + a["data-layer"] if "data-layer" in a else "level:" + a["data-level"]
            self._row = key
            self.rows[key] = []
        elif tag == "td" and self._row:
            self._cell = []
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "td" and self._row and self._cell is not None:
            self.rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Tables:
    parser = _Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def _to_px(frame: dict, x: float, y: float) -> tuple[int, int]:
    xmin, _ymin, _xmax, ymax = frame["bounds"]
    res = frame["resolution"]
    return int((x - xmin) / res), int((ymax - y) / res)


def _near(px: np.ndarray, points, color, radius: int = 2) -> int:
    """How many of the pixels within ``radius`` of ``points`` have ``color``."""
    h, w = px.shape[:2]
    hits = 0
    for x, y in points:
        ys, xs = (
            slice(max(y - radius, 0), min(y + radius + 1, h)),
            slice(max(x - radius, 0), min(x + radius + 1, w)),
        )
        hits += int(np.all(px[ys, xs] == np.array(color, dtype=np.uint8), axis=-1).sum())
    return hits


def _edge_points(frame, box, n: int = 24):
    """Pixel positions along the edges of a box (map units)."""
    xmin, ymin, xmax, ymax = box
    pts = []
    for t in np.linspace(0, 1, n):
        x, y = xmin + (xmax - xmin) * t, ymin + (ymax - ymin) * t
        pts += [(x, ymin), (x, ymax), (xmin, y), (xmax, y)]
    return [_to_px(frame, x, y) for x, y in pts]


def test_update_report_html(runs):
    folder = runs["update"]
    out = write_report(load_project(runs["root"]), folder)
    assert out == folder / "report.html"
    doc = _parse(out)
    summary = json.loads((folder / "summary.json").read_text())
    tiles = json.loads((folder / "tiles.json").read_text())["levels"]
    changed = {k: v for k, v in summary["changes"]["layers"].items() if any(v.values())}
    assert {"parcels", "buildings", "roads"} <= set(changed)
    for name, c in summary["changes"]["layers"].items():
        assert doc.rows[f"layer:{name}"] == [
            name,
            str(c["added"]),
            str(c["modified"]),
            str(c["deleted"]),
        ]
    for lv, d in summary["levels"].items():
        counts = [f"{d[k]:,}" for k in ("rendered", "written", "unchanged", "blank", "removed")]
        counts += [f"{d['blank_stored']:,}"] if summary["tiles_blank_stored"] else []
        assert doc.rows[f"level:{lv}"] == [lv, *counts, str(len(tiles.get(lv, [])))]
        assert d["rendered"] == d["written"] + d["unchanged"] + d["blank"]
        assert len(tiles.get(lv, [])) == d["written"] + d["blank_stored"] + d["removed"]
    assert {"changemap.png", "summary.json", "changes.geojson", "tiles.json"} <= set(doc.links)
    assert doc.images == ["changemap.png"]
    text = out.read_text()
    assert "http://" not in text.replace("https://", "") and "<script" not in text
    for stage in summary["stages"]:
        assert stage in text


def test_update_changemap_shows_the_changes(runs):
    project = load_project(runs["root"])
    folder = runs["update"]
    write_report(project, folder)
    png = folder / "changemap.png"
    px = _pixels(png)
    frame = changemap_frame(png)
    assert (
        frame
        and frame["note"] is None
        and tuple(px.shape[:2])
        == (
            frame["size"][1],
            frame["size"][0],
        )
    )
    # not blank: the map (background, roads, parcels...) plus the overlay colours
    colours = np.unique(px.reshape(-1, 4), axis=0)
    assert len(colours) > 20
    background = np.array([0xF4, 0xF1, 0xEA, 255], dtype=np.uint8)
    assert np.all(px == background, axis=-1).mean() > 0.05

    to3857 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    feats = json.loads((folder / "changes.geojson").read_text())["features"]

    def box3857(f):
        c = np.array(
            [
                xy
                for ring in (
                    [f["geometry"]["coordinates"]]
                    if f["geometry"]["type"] == "LineString"
                    else f["geometry"]["coordinates"]
                )
                for xy in ring
            ]
        )
        x, y = to3857.transform(c[:, 0], c[:, 1])
        return min(x), min(y), max(x), max(y)

    parcels = [f for f in feats if f["properties"] == {"layer": "parcels", "change": "new"}]
    deleted = [f for f in feats if f["properties"] == {"layer": "buildings", "change": "old"}]
    assert len(parcels) == 3 and len(deleted) == 1
    for f in parcels:  # new geometries outlined in magenta
        assert _near(px, _edge_points(frame, box3857(f)), COLOR_NEW) > 20
    # the deleted building's old box, dashed in orange
    assert _near(px, _edge_points(frame, box3857(deleted[0])), COLOR_OLD) > 5
    # and away from the changes there is no overlay colour: the map's own corner
    assert _near(px, [(frame["size"][0] - 3, 2)], COLOR_NEW) == 0

    # the dirty tiles of the chosen level, outlined in blue
    level = frame["tile_level"]
    tiles = json.loads((folder / "tiles.json").read_text())["levels"][str(level)]
    assert level == max(project.levels)  # 13 tiles at level 16 fit easily
    r, c = tiles[0]
    tb = tile_bounds(project.scheme, level, r, c)
    assert _near(px, _edge_points(frame, tb, 8), COLOR_TILE, radius=1) > 10


def test_seed_report_is_a_full_build(runs):
    project = load_project(runs["root"])
    folder = runs["seed"]
    out = write_report(project, folder)
    text = out.read_text()
    assert "Full build" in text
    doc = _parse(out)
    summary = json.loads((folder / "summary.json").read_text())
    for lv, d in summary["levels"].items():
        counts = [f"{d[k]:,}" for k in ("rendered", "written", "unchanged", "blank", "removed")]
        counts += [f"{d['blank_stored']:,}"] if summary["tiles_blank_stored"] else []
        assert doc.rows[f"level:{lv}"] == [lv, *counts]
    frame = changemap_frame(folder / "changemap.png")
    assert frame["note"] == "full build"
    px = _pixels(folder / "changemap.png")
    assert len(np.unique(px.reshape(-1, 4), axis=0)) > 20
    assert _near(px, [(x, y) for x in range(0, 800, 7) for y in range(0, 560, 7)], COLOR_NEW) == 0
    assert "full build" in report_text(folder)


def test_report_text_latest_and_find(runs):
    project = load_project(runs["root"])
    write_report(project, runs["update"])
    assert latest_report(project) == runs["update"] / "report.html"
    assert find_run(project) == runs["update"]
    assert find_run(project, "1") == runs["seed"]
    assert find_run(project, 999) is None and find_run(project, "x") is None
    text = report_text(runs["update"])
    assert text.startswith(f"tiledelta update run {runs['result']['run']}")
    assert "parcels: 3 added, 0 modified, 0 deleted" in text
    assert "buildings: 0 added, 0 modified, 1 deleted" in text
    assert str(runs["update"] / "report.html") in text


def test_html_escapes_and_shows_errors():
    summary = {
        "error": "StyleError: <script>alert('x')</script> & more",
        "changes": {
            "layers": {"<b>roads</b>": {"added": 1, "modified": 0, "deleted": 0}},
            "rebuild": None,
        },
        "levels": {"13": {"tiles": 1}},
        "stages": {"detect<i>": 0.5},
    }
    page = render_html(summary, project_name='"quoted" & <name>')
    assert "<script>" not in page and "<b>roads" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&quot;quoted&quot; &amp; &lt;name&gt;" in page
    assert 'class="error"' in page and "failed" in page
    doc = _Tables()
    doc.feed(page)
    assert doc.rows["layer:<b>roads</b>"] == ["<b>roads</b>", "1", "0", "0"]


def test_report_without_a_map(runs, tmp_path, monkeypatch, caplog):
    """A run folder whose change map cannot be drawn still gets its report."""
    import tiledelta.runs.report.write as write  # where write_report looks render_changemap up

    def broken(*_a, **_k):
        raise RuntimeError("no map today")

    monkeypatch.setattr(write, "render_changemap", broken)
    project = load_project(runs["root"])
    folder = tmp_path / "run"
    out = write_report(project, folder, summary={"run": 7, "error": "boom"}, layers={})
    page = out.read_text()
    assert "boom" in page and "<img" not in page
    assert "no map today" in caplog.text
    assert json.loads((folder / "summary.json").read_text())["run"] == 7
    assert "tiledelta seed run 7 FAILED" in report_text(folder)
    assert not (folder / "changemap.png").exists()


def test_update_without_changes(runs, tmp_path):
    """An update that found nothing: the map shows the data extent, noted as such."""
    import shutil

    from tiledelta.api import update

    root = tmp_path / "county"
    shutil.copytree(runs["root"], root)
    result = update(load_project(root))
    assert result["tiles_written"] == 0
    folder = Path(result["run_folder"])
    out = write_report(load_project(root), folder)
    assert "No layer changed" not in out.read_text()  # layers are listed, all zero
    assert changemap_frame(folder / "changemap.png")["note"] == "no feature changed"
    assert "update run" in report_text(folder)
