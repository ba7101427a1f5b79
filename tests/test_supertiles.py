"""Supertiles: what ArcGIS Server redraws for an area of interest (issue 11, fault 9).

Esri's Manage Tile Cache documentation: the map is drawn in supertiles of 2,048 x 2,048
px with antialiasing, 4,096 x 4,096 without, and a supertile an area of interest meets
is drawn whole. These tests check the grid arithmetic against figures worked out by
hand from Esri's published Web Mercator resolutions and a State Plane scheme's origin,
that the area of interest meets exactly the supertiles of the dirty tiles (found here by
brute force), and that ``plan --target arcgis`` says what the emulated server then does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from support.emulator import Emulator, make_service_definition
from support.emulator.model import SERVICE_INFO

from tiledelta import sample
from tiledelta.api import init_project, load_project, seed
from tiledelta.cli import main
from tiledelta.config import ArcGISConfig
from tiledelta.grid import load_scheme, web_mercator
from tiledelta.grid.supertiles import (
    drawing_grid,
    service_antialiasing,
    supertile_bounds,
    supertile_span,
    supertile_tile_count,
    supertiles_of_tiles,
)
from tiledelta.project import Project
from tiledelta.publish.arcgis.cache import (
    SHRINK,
    Supertiles,
    server_work,
    service_supertiles,
    update_server,
)
from tiledelta.render import mapnik_installed

USER, PASSWORD = "publisher", "super-Pa55"
HALF = 20037508.342787  # Esri's Web Mercator origin is (-HALF, HALF)
RES0 = 156543.033928  # Esri's Web Mercator LOD 0 resolution (m/px)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "schemes"


# ------------------------------------------------------------------ grid arithmetic


@pytest.mark.parametrize("level", range(20))
def test_web_mercator_supertiles_by_hand(level: int) -> None:
    wm = web_mercator()
    res = RES0 / 2**level
    assert supertile_span(wm, 2048) == (8, 8) and supertile_span(wm, 4096) == (16, 16)
    for px in (2048, 4096):
        n = px // 256
        per_side = -(-(2**level) // n)  # ceil: the last supertile is clipped to the world
        span = (n, n)
        # the supertile at the origin: px pixels on a side, or the whole world when smaller
        edge = min(px * res, 2 * HALF)
        b = supertile_bounds(wm, level, 0, 0, span)
        assert b.xmin == pytest.approx(-HALF, abs=1e-6)
        assert b.ymax == pytest.approx(HALF, abs=1e-6)
        assert b.xmax - b.xmin == pytest.approx(edge, rel=1e-9)
        assert b.ymax - b.ymin == pytest.approx(edge, rel=1e-9)
        # the last supertile on a side ends on the world's edge
        last = supertile_bounds(wm, level, per_side - 1, per_side - 1, span)
        assert last.xmax == pytest.approx(HALF, rel=1e-7) and last.ymin == pytest.approx(-HALF)
        # every tile of the level is in exactly one supertile
        if level <= 8:
            all_st = np.array([(r, c) for r in range(per_side) for c in range(per_side)])
            assert supertile_tile_count(wm, level, all_st, span) == 4**level
        # a point: Esri's tile address by hand, then its supertile
        x, y = -13_784_000.0, 5_806_500.0  # Astoria, Oregon
        col, row = int((x + HALF) // (256 * res)), int((HALF - y) // (256 * res))
        st = supertiles_of_tiles(np.array([[row, col]]), span)
        assert st.tolist() == [[row // n, col // n]]
        sb = supertile_bounds(wm, level, row // n, col // n, span)
        assert sb.xmin <= x <= sb.xmax and sb.ymin <= y <= sb.ymax


def test_web_mercator_supertile_sizes_in_metres() -> None:
    """Esri's published resolutions times 2048 (or 4096) pixels."""
    wm = web_mercator()
    for level, res, metres in (
        (9, 305.748113140625, 626_172.135712),
        (16, 2.388657133911758, 4_891.969810),
        (19, 0.29858214173896974, 611.496226),
    ):
        assert wm.resolution(level) == pytest.approx(res, rel=1e-9)
        b = supertile_bounds(wm, level, 10, 10, (8, 8))
        assert b.xmax - b.xmin == pytest.approx(metres, rel=1e-8)
        b4 = supertile_bounds(wm, level, 10, 10, (16, 16))
        assert b4.xmax - b4.xmin == pytest.approx(2 * metres, rel=1e-8)
        # supertile (10, 10) starts 10 supertiles right of and below the origin
        assert b.xmin == pytest.approx(-HALF + 10 * metres, rel=1e-9)
        assert b.ymax == pytest.approx(HALF - 10 * metres, rel=1e-9)


def test_state_plane_scheme_with_its_own_origin() -> None:
    """Oregon North (EPSG:2913, ft): supertiles count from the scheme's origin, not 0,0."""
    scheme = load_scheme("oregon_north_2913.json", EXAMPLES)
    ox, oy = -117_104_300.0, 136_876_000.0  # tileInfo.origin in the JSON
    assert (scheme.origin_x, scheme.origin_y) == (ox, oy)
    # Astoria (the sample town's corner) in Oregon North feet
    x, y = 7_355_281.43, 921_968.51
    # level 6: 1:24,000, 20.8333 ft/px, so a tile is 5,333.33 ft and a 2048-px
    # supertile 42,666.67 ft; by hand: (oy - y) / 5333.33 = 25491.4, (x - ox) / 5333.33
    # = 23336.2, so tile (25491, 23336) and supertile (3186, 2917), or (1593, 1458) of
    # 16 x 16 tiles at 4096 px
    assert scheme.resolution(6) == pytest.approx(20.833333333333332)
    tile = np.array([[25491, 23336]])
    assert supertiles_of_tiles(tile, supertile_span(scheme, 2048)).tolist() == [[3186, 2917]]
    assert supertiles_of_tiles(tile, supertile_span(scheme, 4096)).tolist() == [[1593, 1458]]
    edge = 2048 * 20.833333333333332  # 42,666.67 ft
    b = supertile_bounds(drawing_grid(scheme), 6, 3186, 2917, (8, 8))
    assert b.xmin == pytest.approx(ox + 2917 * edge, rel=1e-12)
    assert b.ymax == pytest.approx(oy - 3186 * edge, rel=1e-12)
    assert b.xmax - b.xmin == pytest.approx(edge, rel=1e-9)
    assert b.xmin <= x <= b.xmax and b.ymin <= y <= b.ymax
    # level 0 (1:1,600,000): Astoria is in the grid's last row of supertiles, which the
    # service's full extent would clip but the drawing grid does not
    assert (int((oy - y) // (256 * 1388.888888888889)), int((x - ox) // 355_555.5556)) == (
        382,
        350,
    )
    full = supertile_bounds(drawing_grid(scheme), 0, 47, 43, (8, 8))
    assert full.ymax - full.ymin == pytest.approx(2048 * 1388.888888888889)


def test_a_service_in_another_crs(sample_project: Path) -> None:
    """The project in Web Mercator, the service in Oregon North: boxes are projected, and
    the area meets exactly the supertiles (from the State Plane origin) of the tiles the
    projected boxes reach."""
    import pyproj

    project = load_project(sample_project)
    service = load_scheme("oregon_north_2913.json", EXAMPLES)
    box = [sample.X0 + 200, sample.Y0 + 200, sample.X0 + 260, sample.Y0 + 230]
    tr = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:2913", always_xy=True)
    x0, y0, x1, y1 = tr.transform_bounds(*box, densify_pts=11)
    work = server_work(
        project, service, {"water": np.array([box])}, [6, 7, 8], Supertiles(2048, (8, 8), "t")
    )
    assert sorted(work) == [6, 7, 8]
    ox, oy = service.origin_x, service.origin_y
    for level, w in work.items():
        t = 256 * service.resolution(level)
        pad = project.settings.buffer * service.resolution(level)
        cols = range(int((x0 - pad - ox) // t), int((x1 + pad - ox) // t) + 1)
        rows = range(int((oy - y1 - pad) // t), int((oy - y0 + pad) // t) + 1)
        assert {tuple(v) for v in w.dirty_tiles.tolist()} == {(r, c) for r in rows for c in cols}
        want = {(r // 8, c // 8) for r in rows for c in cols}
        assert {tuple(v) for v in w.supertiles.tolist()} == want
        e = 8 * t
        for r in range(min(want)[0] - 1, max(want)[0] + 2):
            for c in range(
                min(want, key=lambda v: v[1])[1] - 1, max(want, key=lambda v: v[1])[1] + 2
            ):
                cell = shapely.box(ox + c * e, oy - (r + 1) * e, ox + (c + 1) * e, oy - r * e)
                assert w.area.intersects(cell) == ((r, c) in want), (level, r, c)


def test_tile_size_sets_the_span() -> None:
    big = web_mercator().model_copy(update={"tile_width": 512, "tile_height": 512})
    assert supertile_span(big, 2048) == (4, 4) and supertile_span(big, 4096) == (8, 8)


def test_antialiasing_is_read_from_the_service_json() -> None:
    assert service_antialiasing({"documentInfo": {"AntialiasingMode": "None"}}) is False
    for mode in ("Fastest", "Fast", "Normal", "Best", "normal"):
        assert service_antialiasing({"documentInfo": {"AntialiasingMode": mode}}) is True
    assert service_antialiasing({"documentInfo": {"Title": "x"}}) is None
    assert service_antialiasing({}) is None
    wm = web_mercator()
    cfg = ArcGISConfig(server="https://gis.example.org/server", service="A/B")
    assert service_supertiles(cfg, {}, wm).px == 2048  # not said: antialiasing assumed
    assert "assumed" in service_supertiles(cfg, {}, wm).source
    off = {"documentInfo": {"AntialiasingMode": "None"}}
    assert service_supertiles(cfg, off, wm).px == 4096
    assert service_supertiles(cfg, off, wm).span == (16, 16)
    forced = cfg.model_copy(update={"supertile": 2048})
    assert service_supertiles(forced, off, wm).px == 2048


# ------------------------------------------------------------------ the area of interest


def brute_force_dirty(scheme, level: int, boxes: np.ndarray, pad: float) -> set:
    """Tiles whose extent grown by ``pad`` meets a box, by testing every nearby tile."""
    res = scheme.resolution(level)
    size = 256 * res
    out = set()
    for x0, y0, x1, y1 in boxes:
        for row in range(int((HALF - y1 - pad) // size) - 2, int((HALF - y0 + pad) // size) + 3):
            for col in range(
                int((x0 - pad + HALF) // size) - 2, int((x1 + pad + HALF) // size) + 3
            ):
                tx0, ty1 = -HALF + col * size, HALF - row * size
                if (
                    x0 <= tx0 + size + pad
                    and x1 >= tx0 - pad
                    and y0 <= ty1 + pad
                    and y1 >= ty1 - size - pad
                ):
                    out.add((row, col))
    return out


@pytest.mark.parametrize("px", [2048, 4096])
def test_area_meets_exactly_the_supertiles_of_dirty_tiles(sample_project: Path, px: int) -> None:
    project = load_project(sample_project)
    wm = project.scheme
    n = px // 256
    # Two small boxes in different supertiles, one on a supertile corner at level 15.
    corner_res = wm.resolution(15)
    edge = px * corner_res
    sr, sc = int((HALF - sample.Y0) // edge), int((sample.X0 + HALF) // edge)
    cx, cy = -HALF + (sc + 1) * edge, HALF - (sr + 1) * edge  # a supertile corner
    boxes = np.array(
        [
            [cx - 3.0, cy - 3.0, cx + 3.0, cy + 3.0],
            [sample.X0 + 200, sample.Y0 + 200, sample.X0 + 260, sample.Y0 + 230],
        ]
    )
    levels = [13, 14, 15, 16, 17]
    st = Supertiles(px, (n, n), "test")
    work = server_work(project, wm, {"water": boxes}, levels, st)
    assert sorted(work) == levels  # water draws at every level of the project
    pad_px = project.style.layer("water").buffer_size or project.settings.buffer
    for level, w in work.items():
        res = wm.resolution(level)
        dirty = brute_force_dirty(wm, level, boxes, pad_px * res)
        assert {tuple(t) for t in w.dirty_tiles.tolist()} == dirty
        want = {(r // n, c // n) for r, c in dirty}
        assert {tuple(s) for s in w.supertiles.tolist()} == want
        assert w.tiles == len(want) * n * n  # none clipped: the county is far from the edge
        # every supertile around: met by the area exactly when it is wanted
        rows = [r for r, _ in want]
        cols = [c for _, c in want]
        area = w.area
        for r in range(min(rows) - 2, max(rows) + 3):
            for c in range(min(cols) - 2, max(cols) + 3):
                ed = px * res
                box = shapely.box(
                    -HALF + c * ed, HALF - (r + 1) * ed, -HALF + (c + 1) * ed, HALF - r * ed
                )
                if (r, c) in want:
                    # drawn whole; and each of its tiles is nearly all inside the area
                    assert area.intersects(box) and not area.touches(box)
                    for tr in range(r * n, r * n + n, n - 1):
                        for tc in range(c * n, c * n + n, n - 1):
                            tile = shapely.box(
                                -HALF + tc * 256 * res,
                                HALF - (tr + 1) * 256 * res,
                                -HALF + (tc + 1) * 256 * res,
                                HALF - tr * 256 * res,
                            )
                            assert area.intersection(tile).area >= 0.97 * tile.area
                else:
                    # a neighbour: not even touched, and at least the inset away
                    assert not area.intersects(box)
                    assert area.distance(box) >= SHRINK * 256 * res * 0.999
        # the corner box at level 15 makes four supertiles (it meets all four)
        if level == 15:
            assert {(sr, sc), (sr, sc + 1), (sr + 1, sc), (sr + 1, sc + 1)} <= want


def test_no_dirty_layer_at_a_level_sends_nothing(sample_project: Path) -> None:
    project = load_project(sample_project)
    boxes = np.array([[sample.X0 + 200, sample.Y0 + 200, sample.X0 + 260, sample.Y0 + 230]])
    st = Supertiles(2048, (8, 8), "t")
    work = server_work(project, project.scheme, {"buildings": boxes}, [13, 14, 15], st)
    # the sample style draws buildings from level 14 (1:36,112) on, not at 13 (1:72,224)
    assert sorted(work) == [14, 15]


# ------------------------------------------------------------------ against the emulator


@pytest.fixture
def site(tmp_path: Path):
    """The sample county published on the emulator, the server's cache marked current."""
    county = tmp_path / "county"
    sample.generate(county)
    init_project(county, style=county / "style.xml", levels="13-15", force=True)
    emu = Emulator(tmp_path / "server", username=USER, password=PASSWORD).start()
    arcgis = ArcGISConfig(server=emu.url, service="Tests/County", sd="County.sd", poll_seconds=0.05)
    project = Project.load(county).updated(
        render={"processes": 1}, cache={"blank_tiles": "skip"}, arcgis=arcgis
    )
    project.save()
    (county / ".env").write_text(f"ARCGIS_USERNAME={USER}\nARCGIS_PASSWORD={PASSWORD}\n")
    # Without Mapnik (the core venv) the service starts with no cache and the emulator
    # draws stand-in tiles: which tiles a job redraws does not depend on that.
    seeded = mapnik_installed()
    if seeded:
        seed(load_project(county))
    make_service_definition(county, county / "County.sd", "Tests", "County", include_cache=seeded)
    from tiledelta.publish.arcgis.publish import publish

    publish(load_project(county), say=lambda m: None, update_cache=False)
    update_server(load_project(county), mark_current=True)
    yield county, emu
    emu.stop()


def set_antialiasing(emu: Emulator, mode: str) -> None:
    """Set the emulated service's AntialiasingMode (what its MapServer JSON reports)."""
    f = emu.service("Tests", "County").path / SERVICE_INFO
    info = json.loads(f.read_text(encoding="utf-8"))
    info["antialiasing_mode"] = mode
    f.write_text(json.dumps(info), encoding="utf-8")


def edit(county: Path, emu: Emulator) -> None:
    sample.apply_edits(county)
    served = emu.service("Tests", "County").path / "data" / "county.gpkg"
    shutil.copy2(county / "data" / "county.gpkg", served)


def plan_json(county: Path) -> dict:
    out = CliRunner().invoke(
        main, ["plan", "--project", str(county), "--target", "arcgis", "--json"]
    )
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.mark.parametrize("mode,px", [("Normal", 2048), ("None", 4096)])
def test_plan_equals_what_the_server_redraws(site, mode: str, px: int) -> None:
    county, emu = site
    set_antialiasing(emu, mode)
    edit(county, emu)
    plan = plan_json(county)
    assert plan["target"] == "arcgis" and plan["service"] == "Tests/County"
    assert plan["supertile"]["px"] == px
    assert plan["supertile"]["tiles"] == [px // 256, px // 256]
    assert mode in plan["supertile"]["source"]
    assert plan["tiles"] > 0 and plan["supertiles"] > 0
    assert plan["tiles"] == sum(d["tiles"] for d in plan["levels"].values())
    # the server redraws more than tiledelta finds dirty, never less
    assert plan["tiles"] >= plan["dirty_tiles"]
    text = CliRunner().invoke(main, ["plan", "--project", str(county), "--target", "arcgis"])
    assert text.exit_code == 0, text.output
    assert f"supertiles of {px} px" in text.output
    assert f"the server redraws {plan['tiles']:,} tiles" in text.output

    before = set(emu.jobs)
    result = update_server(load_project(county), say=lambda m: None)
    jobs = [emu.jobs[j] for j in emu.jobs if j not in before]
    assert len(jobs) == plan["jobs"] == len(result["jobs"])
    redrawn: dict[str, int] = {}
    supertiles: dict[str, int] = {}
    for job in jobs:
        rec = job.record
        (level,) = rec["levels"]
        redrawn[str(level)] = len(rec["tiles"])
        supertiles[str(level)] = len(rec["supertiles"])
        # the emulator's supertiles are the ones tiledelta meant: none touched by accident
        assert len(
            {(lv, r // (px // 256), c // (px // 256)) for lv, r, c in rec["area_tiles"]}
        ) == len(rec["supertiles"])
    planned = {lv: d for lv, d in plan["levels"].items() if d["supertiles"]}
    assert redrawn == {lv: d["tiles"] for lv, d in planned.items()}
    assert supertiles == {lv: d["supertiles"] for lv, d in planned.items()}
    # the run summary carries the same figures
    assert {str(j["level"]): j["tiles"] for j in result["jobs"]} == redrawn


def test_plan_target_arcgis_needs_no_job_and_names_the_config(site) -> None:
    county, emu = site
    edit(county, emu)
    before = len(emu.jobs)
    Project.load(county).updated(
        arcgis=load_project(county).config.arcgis.model_copy(update={"supertile": 4096})
    ).save()
    plan = plan_json(county)
    assert plan["supertile"] == {"px": 4096, "tiles": [16, 16], "source": "[arcgis] supertile"}
    assert len(emu.jobs) == before  # planning sends nothing
