"""PNG encoding (``[cache] png_compression``, render/encode.py) and solid tiles encoded once.

Oracles: Mapnik itself (its drawing, read back through its own lossless ``png32``), Pillow
and GDAL (rasterio) decoding every tile, and the bundle index parsed with struct alone.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from test_update import assert_cache_equals_fresh_seed, read_cache

from tiledelta import api, sample
from tiledelta.api import seed, update
from tiledelta.change import build_signature, detect_changes
from tiledelta.cli import main
from tiledelta.config import PNG_COMPRESSIONS, RenderSettings
from tiledelta.errors import ConfigError
from tiledelta.grid import Bounds, tile_range
from tiledelta.project import Project
from tiledelta.render import renderer as renderer_mod
from tiledelta.render._mapnik import mapnik  # keeps GDAL's PROJ_LIB (see there)
from tiledelta.render.renderer import Renderer, encode
from tiledelta.render.stats import Solid
from tiledelta.sources import read_layers

META, TILE = 4, 256
HALF = 20037508.342789244
BACKGROUND = (0xF4, 0xF1, 0xEA, 255)  # the sample style's background-color, #f4f1ea
PITCH = sample.BLOCK + sample.STREET
HEIGHT = sample.NY * PITCH + sample.STREET
#: the sample's river (render/sample.py): 760 m of water along the north of the town
RIVER = Bounds(sample.X0, sample.Y0 + HEIGHT + 160, sample.X0 + 2000, sample.Y0 + HEIGHT + 800)


# --- decoders, independent of tiledelta --------------------------------------------------------


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def gdal(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(), MemoryFile(data) as mf, mf.open() as ds:
            assert ds.count == 4, f"GDAL reads {ds.count} bands"
            return np.moveaxis(ds.read(), 0, -1)


def is_solid_tile(px: np.ndarray) -> bool:
    return bool((px == px[0, 0]).all())


# --- Mapnik's drawing, the oracle --------------------------------------------------------------


def _metatiles_over_town(level: int) -> list[tuple[int, int]]:
    """2 x 2 meta-tiles around the middle of the sample town (Web Mercator)."""
    cx = sample.X0 + sample.NX * PITCH / 2
    cy = sample.Y0 + sample.NY * PITCH / 2
    span = 2 * HALF / 2**level * META
    mcol, mrow = int((cx + HALF) // span), int((HALF - cy) // span)
    return [(mrow + dr, mcol + dc) for dr in (-1, 0) for dc in (-1, 0)]


@pytest.fixture(scope="module")
def county(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("encode") / "county"
    sample.generate(root)
    return root


def mapnik_tiles(style_xml: str, base: Path, level: int) -> list[tuple]:
    """Mapnik alone draws meta-tiles over the town from the style's own datasources:
    (image, x, y, view, Mapnik's png32 of the view) for every tile not of one colour."""
    m = mapnik.Map(META * TILE, META * TILE)
    mapnik.load_map_from_string(m, style_xml, False, str(base))
    m.buffer_size = 64
    span = 2 * HALF / 2**level * META
    out = []
    for mrow, mcol in _metatiles_over_town(level):
        x0, y1 = -HALF + mcol * span, HALF - mrow * span
        m.zoom_to_box(mapnik.Box2d(x0, y1 - span, x0 + span, y1))
        im = mapnik.Image(META * TILE, META * TILE)
        mapnik.render(m, im)
        for y in range(0, META * TILE, TILE):
            for x in range(0, META * TILE, TILE):
                v = im.view(x, y, TILE, TILE)
                if not v.is_solid():
                    out.append((im, x, y, v, v.to_string("png32")))
    return out


TRANSPARENT = (
    sample.STYLE.replace(' background-color="#f4f1ea"', "")
    .replace('fill="#aad3df"', 'fill="#aad3df" fill-opacity="0.45"')
    .replace('fill="#cfc6bd"', 'fill="#cfc6bd" fill-opacity="0.6"')
)


@pytest.mark.parametrize("compression", PNG_COMPRESSIONS)
@pytest.mark.parametrize("style", ["opaque", "transparent"])
def test_every_png_compression_decodes_to_the_pixels_mapnik_drew(
    county: Path, compression: str, style: str
) -> None:
    xml = sample.STYLE if style == "opaque" else TRANSPARENT
    settings = RenderSettings(png_compression=compression)
    tiles = [t for level in (16, 17) for t in mapnik_tiles(xml, county, level)]
    assert len(tiles) >= 20
    partial = 0
    for im, x, y, view, png32 in tiles:
        want = pillow(png32)  # Mapnik's lossless png32: exactly what it drew
        partial += int(((want[..., 3] > 0) & (want[..., 3] < 255)).any())
        assert not im.premultiplied()
        # the renderer's path (a slice of the meta-tile's buffer) and the view's own pixels
        raw = np.frombuffer(im.to_string(), np.uint8).reshape(META * TILE, META * TILE, 4)
        for data in (
            encode(view, settings, False, raw[y : y + TILE, x : x + TILE]),
            encode(view, settings),
        ):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert np.array_equal(pillow(data), want)
            assert np.array_equal(gdal(data), want)
            if compression == "mapnik":
                assert data == png32  # Mapnik's own bytes
    if style == "transparent":
        assert partial > 0, "no semi-transparent pixel drawn: the straight-alpha check is void"


def test_fast_is_smaller_than_one_tenth_more_than_mapnik_and_small_is_smaller(
    county: Path,
) -> None:
    tiles = mapnik_tiles(sample.STYLE, county, 16)
    size = {
        c: sum(len(encode(t[3], RenderSettings(png_compression=c))) for t in tiles)
        for c in PNG_COMPRESSIONS
    }
    assert size["mapnik"] == sum(len(t[4]) for t in tiles)
    assert size["fast"] <= 1.10 * size["mapnik"], size
    assert size["small"] < size["mapnik"], size


# --- the setting: validated, in the signature -------------------------------------------------


def test_a_bad_value_is_one_line_naming_the_key(county: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(county, root)
    api.init_project(root, style=root / "style.xml", levels="15-16", force=True)
    toml = root / "tiledelta.toml"
    text = toml.read_text()
    assert 'png_compression = "fast"' in text  # init writes the default
    toml.write_text(text.replace('png_compression = "fast"', 'png_compression = "fastest"'))
    with pytest.raises(ConfigError) as exc:
        Project.load(root)
    msg = str(exc.value)
    assert "cache.png_compression" in msg and "'fast'" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="png_compression"):
        RenderSettings(png_compression="fastest")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, county: Path) -> Path:
    """The sample county at levels 15-17 with png_compression = "small", seeded."""
    root = tmp_path_factory.mktemp("seeded") / "county"
    shutil.copytree(county, root)
    api.init_project(root, style=root / "style.xml", levels="15-17", force=True)
    project = api.load_project(root)
    project.updated(render={"processes": 2}, cache={"png_compression": "small"}).save()
    seed(api.load_project(root))
    return root


def test_the_setting_is_in_the_signature_and_status_names_a_rebuild(
    seeded: Path, tmp_path: Path
) -> None:
    root = tmp_path / "p"
    shutil.copytree(seeded, root)
    project = api.load_project(root)
    sig = build_signature(project, project.levels)
    assert sig["render"]["png_compression"] == "small"
    assert detect_changes(project).rebuild is None
    for other in ("fast", "mapnik"):
        changed = project.updated(cache={"png_compression": other})
        assert build_signature(changed, changed.levels) != sig
        changed.save()
        rebuild = detect_changes(api.load_project(root)).rebuild
        assert rebuild and "render settings" in rebuild
        res = CliRunner().invoke(main, ["status", "--project", str(root), "--json"])
        assert res.exit_code == 0, res.output
        assert "render settings" in json.loads(res.stdout)["rebuild"]
    # "mapnik" writes what versions before the setting wrote: their signature, no key
    mapnik_sig = build_signature(project.updated(cache={"png_compression": "mapnik"}), [15])
    assert "png_compression" not in mapnik_sig["render"]
    # JPEG tiles are not PNG: there the setting changes no byte, and rebuilds nothing
    jpeg = project.updated(cache={"format": "jpeg"})
    other = jpeg.updated(cache={"png_compression": "fast"})
    assert build_signature(jpeg, jpeg.levels) == build_signature(other, other.levels)


def test_seed_then_update_equals_a_fresh_seed_with_the_setting(
    seeded: Path, tmp_path: Path
) -> None:
    root = tmp_path / "p"
    shutil.copytree(seeded, root)
    before = read_cache(root)
    sample.apply_edits(root)
    result = update(api.load_project(root))
    assert result["tiles_written"] > 0 and not result.get("rebuild")
    assert read_cache(root) != before
    assert_cache_equals_fresh_seed(root)  # same settings, byte for byte
    # and the bytes are libdeflate level 9's, not Mapnik's nor level 1's
    small = read_cache(root)
    fast = api.load_project(root).updated(cache={"png_compression": "fast"})
    fast.save()
    update(api.load_project(root))  # a rebuild: the setting changed
    assert read_cache(root).keys() == small.keys()
    assert sum(map(len, read_cache(root).values())) > sum(map(len, small.values()))


# --- solid tiles --------------------------------------------------------------------------------


def test_solid_tiles_are_encoded_once_per_colour(seeded: Path, monkeypatch) -> None:
    project = api.load_project(seeded)
    r = Renderer(project.style, project.scheme, read_layers(project), project.settings)
    calls: list[bool] = []
    real = renderer_mod.encode

    def counting(view, *args, **kwargs):
        calls.append(bool(view.is_solid()))
        return real(view, *args, **kwargs)

    monkeypatch.setattr(renderer_mod, "encode", counting)
    monkeypatch.setattr(renderer_mod, "_SOLID", {})
    level = 17
    r0, r1, c0, c1 = tile_range(project.scheme, level, RIVER, touch=False)
    metatiles = {(r // META, c // META) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
    results = [t for mt in sorted(metatiles) for t in r.tiles(level, *mt)]
    solid = [d for *_a, d in results if isinstance(d, Solid)]
    assert len(solid) >= 8, "the river gives no solid tile: the test is void"
    colours = Counter(tuple(pillow(d)[0, 0]) for d in solid)
    for d in solid:
        px = pillow(d)
        assert is_solid_tile(px) and tuple(px[0, 0]) != BACKGROUND
    # one encoding per colour, its bytes shared by every tile of that colour
    assert calls.count(True) == len(colours)
    assert len({id(d) for d in solid}) == len(colours)
    content = [d for *_a, d in results if d is not None and not isinstance(d, Solid)]
    assert calls.count(False) == len(content)
    for d in content:
        assert not is_solid_tile(pillow(d))
    # a second pass draws them again but encodes no solid tile again
    again = [t for mt in sorted(metatiles) for t in r.tiles(level, *mt)]
    assert calls.count(True) == len(colours)
    assert [t[3] for t in again] == [t[3] for t in results]


def parse_bundle(path: Path) -> tuple[list[int], bytes]:
    """A V2 bundle's 16384 index records and the whole file, parsed with struct only."""
    data = path.read_bytes()
    return list(struct.unpack("<16384Q", data[64 : 64 + 131072])), data


def test_summary_counts_solid_tiles_and_a_bundle_stores_each_once(seeded: Path) -> None:
    summary = json.loads(max((seeded / ".tiledelta" / "runs").glob("*/summary.json")).read_text())
    assert summary["kind"] == "seed"
    # the independent count: every stored tile decoded; one colour, not the background
    stored = read_cache(seeded)
    solid = {
        a
        for a, d in stored.items()
        if is_solid_tile(px := pillow(d)) and tuple(px[0, 0]) != BACKGROUND
    }
    assert len(solid) > 10, "no solid tile in the sample: the count is void"
    assert summary["tiles_solid"] == len(solid)
    # the counts still add up: solid is counted apart, among the written ones
    assert summary["tiles_rendered"] == (
        summary["tiles_written"] + summary["tiles_unchanged"] + summary["tiles_blank"]
    )
    assert summary["tiles_solid"] <= summary["tiles_written"]
    # in a bundle, the tiles of one colour are one record's bytes: offsets shared
    shared = 0
    for bundle in (seeded / "cache" / "_alllayers").rglob("*.bundle"):
        index, data = parse_bundle(bundle)
        by_offset: dict[int, list[int]] = {}
        for rec in index:
            size = rec >> 40
            if size:
                by_offset.setdefault(rec & ((1 << 40) - 1), []).append(size)
        bodies = {}
        for off, sizes in by_offset.items():
            (length,) = struct.unpack("<I", data[off - 4 : off])
            assert length == sizes[0]
            bodies[off] = data[off : off + length]
        solid_bodies = [
            b
            for b in bodies.values()
            if is_solid_tile(px := pillow(b)) and tuple(px[0, 0]) != BACKGROUND
        ]
        # each solid colour's bytes are stored once in the file
        assert len(solid_bodies) == len(set(solid_bodies))
        for off, sizes in by_offset.items():
            if bodies[off] in solid_bodies and len(sizes) > 1:
                shared += 1
    assert shared > 0, "no bundle holds two solid tiles of one colour"


def test_the_cli_line_says_how_many_were_solid(seeded: Path) -> None:
    from tiledelta.runs.report import counts_line

    summary = json.loads(max((seeded / ".tiledelta" / "runs").glob("*/summary.json")).read_text())
    assert f"{summary['tiles_solid']:,} solid" in counts_line(summary)
