"""Raster layers: block-by-block detection over a 20,000 x 20,000 raster, and an update
after a one-block edit against the full seed of that layer.

    python bench/bench_raster.py                       # 20,000 px, levels 0-17
    python bench/bench_raster.py reach                 # Mapnik's resampling reach
    BENCH_RASTER_SIZE=5000 BENCH_RASTER_LEVELS=0-15 python bench/bench_raster.py

Prints: detection time and the child process's peak RSS for the full size and for a
quarter of it (memory must not grow with the raster), the same with ``trust_mtime``;
then the full seed (time, meta-tiles) and the update after writing one 512 x 512 block
(time, meta-tiles, share of the seed). Nothing is mocked: rasterio writes a tiled
GeoTIFF, tiledelta reads it block by block, Mapnik's gdal datasource draws it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = int(os.environ.get("BENCH_RASTER_SIZE", "20000"))
LEVELS = os.environ.get("BENCH_RASTER_LEVELS", "0-17")
OVERVIEWS = os.environ.get("BENCH_RASTER_OVERVIEWS", "1") == "1"
#: the raster seeded and updated for real (the full size would take minutes to seed here)
SEED_SIZE = int(os.environ.get("BENCH_RASTER_SEED_SIZE", "4000"))
PIXEL = float(os.environ.get("BENCH_RASTER_PIXEL", "2.0"))  # metres (EPSG:3857)
X0, Y1 = -13800000.0, 5830000.0
STYLE = """<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="dem"><Rule><RasterSymbolizer scaling="bilinear"/></Rule></Style>
  <Layer name="dem" srs="epsg:3857">
    <StyleName>dem</StyleName>
    <Datasource>
      <Parameter name="type">gdal</Parameter>
      <Parameter name="file">dem.tif</Parameter>
    </Datasource>
  </Layer>
</Map>
"""


def write_raster(path: Path, size: int) -> None:
    """A tiled (512) uint8 GeoTIFF written block by block: smooth terrain-like values."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:3857", "transform": from_origin(X0, Y1, PIXEL, PIXEL), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "nodata": 0,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        for y in range(0, size, 512):
            h = min(512, size - y)
            yy, xx = np.mgrid[y : y + h, 0:size].astype(np.float32)
            band = 128 + 60 * np.sin(xx / 311.0) * np.cos(yy / 277.0) + 30 * np.sin(xx / 41.0)
            ds.write(band.astype(np.uint8)[None], window=Window(0, y, size, h))
        if OVERVIEWS:  # as a COG has them: low levels read these, not the full raster
            ds.build_overviews([2, 4, 8, 16, 32], rasterio.enums.Resampling.average)


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike getrusage's ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _detect_child(path: str, trust: bool, state: str) -> None:
    """Child process: read the layer's blocks once; print seconds, peak RSS before and
    after (MB)."""
    from tiledelta.sources.raster import read_raster_layer
    from tiledelta.style import LayerSource

    params = {"type": "gdal", "file": path}
    src = LayerSource(name="dem", kind="gdal", path=path, srs="epsg:3857", params=params)
    before = _peak_mb()
    t = time.perf_counter()
    data = read_raster_layer(src, "EPSG:3857", trust_mtime=trust, state=Path(state))
    secs = time.perf_counter() - t
    out = {"seconds": secs, "rss_mb": _peak_mb(), "rss_before_mb": before, "blocks": len(data)}
    print(json.dumps(out))


def detect(path: Path, trust: bool = False, state: Path | None = None) -> dict:
    args = (str(Path(__file__).parent), str(path), trust, str(state or "/nonexistent"))
    code = "import sys; sys.path.insert(0, {!r}); import bench_raster as b; "
    code = (code + "b._detect_child({!r}, {!r}, {!r})").format(*args)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _edit_one_block(path: Path, size: int) -> None:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path, "r+") as ds:  # one 512 x 512 block in the middle
        mid = (size // 2 // 512) * 512
        ds.write(np.full((1, 512, 512), 200, np.uint8), window=Window(mid, mid, 512, 512))


def _project(d: Path):
    from tiledelta import api
    from tiledelta.config import LayerConfig

    (d / "style.xml").write_text(STYLE, encoding="utf-8")
    api.init_project(d, style=d / "style.xml", levels=LEVELS, force=True)
    project = api.load_project(d).updated(
        render={"processes": 2},
        layers={"dem": LayerConfig(trust_mtime=True)},
        cache={"blank_tiles": "skip"},
    )
    project.save()
    return api.load_project(d)


def main() -> None:
    from tiledelta import api
    from tiledelta.change import record_build
    from tiledelta.sources import read_layers
    from tiledelta.stores import open_project_store

    print(
        f"machine: {os.cpu_count()} cores shared with other jobs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-raster-") as tmp:
        root = Path(tmp)
        small = root / "small.tif"
        write_raster(small, SIZE // 4)
        d = root / "big"
        d.mkdir()
        t = time.perf_counter()
        write_raster(d / "dem.tif", SIZE)
        print(
            f"wrote {SIZE:,} x {SIZE:,} uint8 GeoTIFF (tiled 512) in "
            f"{time.perf_counter() - t:.1f} s"
        )
        for n, path in ((SIZE // 4, small), (SIZE, d / "dem.tif")):
            r = detect(path)
            print(
                f"detection, {n:,} x {n:,} px: {r['seconds']:.2f} s, peak RSS "
                f"{r['rss_mb']:.0f} MB (after imports {r['rss_before_mb']:.0f} MB; "
                f"{r['blocks']:,} blocks, overviews included)"
            )

        # Exact meta-tile counts at levels 0-17 for the full-size raster: the full seed's
        # plan, and the plan of the update after a one-block edit (what it would render).
        project = _project(d)
        layers = read_layers(project)
        full_plan = api.seed_dry_run(project)["metatiles_planned"]
        with open_project_store(project):  # an empty cache: the update renders into it
            pass
        record_build(project, layers, project.levels, kind="seed")  # a baseline, no render
        tr = detect(d / "dem.tif", True, d / ".tiledelta" / "state.sqlite")
        print(f"detection with trust_mtime (size and mtime unchanged): {tr['seconds']:.2f} s")
        _edit_one_block(d / "dem.tif", SIZE)
        planned = api.update_dry_run(project)["metatiles"]
        print(
            f"levels {LEVELS}, {SIZE:,} px raster: full seed {full_plan:,} meta-tiles; "
            f"one-block update {planned:,} meta-tiles ({planned / full_plan:.2%})"
        )
        t = time.perf_counter()  # the update for real (into a cache holding only its tiles)
        big = api.update(api.load_project(d), notify=False)
        big_s = time.perf_counter() - t
        print(
            f"update of the {SIZE:,} px raster after the one-block edit: {big_s:.2f} s, "
            f"{big['metatiles_rendered']:,} meta-tiles; stages "
            + ", ".join(f"{k} {v:.2f}" for k, v in big.get("stages", {}).items())
        )

        # Measured: a real seed and update of a smaller raster at the same levels.
        m = root / "measured"
        m.mkdir()
        write_raster(m / "dem.tif", SEED_SIZE)
        project = _project(m)
        t = time.perf_counter()
        full = api.seed(project, notify=False)
        seed_s = time.perf_counter() - t
        _edit_one_block(m / "dem.tif", SEED_SIZE)
        t = time.perf_counter()
        upd = api.update(api.load_project(m), notify=False)
        upd_s = time.perf_counter() - t
        print(
            f"measured, {SEED_SIZE:,} px raster, levels {LEVELS}, 2 processes: full seed "
            f"{seed_s:.1f} s ({full['metatiles_rendered']:,} meta-tiles); update after a "
            f"one-block edit {upd_s:.2f} s ({upd['metatiles_rendered']:,} meta-tiles; "
            f"{upd_s / seed_s:.1%} of the seed's time); stages "
            + ", ".join(f"{k} {v:.2f}" for k, v in upd.get("stages", {}).items())
        )
        rate = full["metatiles_rendered"] / seed_s
        est = full_plan / rate
        print(
            f"full seed of the {SIZE:,} px raster, estimated at the measured seed's "
            f"{rate:.2f} meta-tiles/s (not run: minutes here): {est:.0f} s; the update "
            f"above is {big_s / est:.1%} of it"
        )


REACH_XML = """<Map srs="epsg:3857" background-color="#ffffff">
  <Style name="r"><Rule><RasterSymbolizer scaling="{scaling}"/></Rule></Style>
  <Layer name="r" srs="{srs}"><StyleName>r</StyleName><Datasource>
    <Parameter name="type">gdal</Parameter><Parameter name="file">{file}</Parameter>
  </Datasource></Layer>
</Map>"""


def measure_reach() -> None:
    """How far one changed source pixel shows in Mapnik's output (docs/rasters.md, Reach):
    a 256 x 256 random raster (4 m pixels) with one pixel flipped, drawn with and without
    the change at 16x finer to 4x coarser resolutions, in the map's CRS and from UTM 10N."""
    import pyproj
    import rasterio
    from rasterio.transform import from_origin

    from tiledelta.render._mapnik import mapnik

    px, n = 4.0, 256
    with tempfile.TemporaryDirectory(prefix="bench-reach-") as tmp:
        for crs, origin in (("EPSG:3857", (X0, Y1)), ("EPSG:26910", (435000.0, 5112000.0))):
            files = []
            for changed in (False, True):
                a = np.random.default_rng(1).integers(1, 255, (n, n), dtype=np.uint8)
                if changed:
                    a[128, 128] = 255 - a[128, 128]
                path = Path(tmp) / f"{crs[5:]}-{changed}.tif"
                with rasterio.open(
                    path, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint8",
                    crs=crs, transform=from_origin(*origin, px, px), nodata=0,
                ) as ds:  # fmt: skip
                    ds.write(a, 1)
                    t = ds.transform
                files.append(path)
            cx, cy = pyproj.Transformer.from_crs(crs, 3857, always_xy=True).transform(
                *(t * (128.5, 128.5))
            )
            for scaling in ("near", "bilinear", "bicubic", "lanczos"):
                cells = []
                for res in (0.25, 1.0, 4.0, 16.0):
                    half = 200.0 if res < 8 else 900.0
                    box = (cx - half, cy - half, cx + half, cy + half)
                    size = int(round(2 * half / res))
                    imgs = []
                    for f in files:
                        m = mapnik.Map(size, size)
                        xml = REACH_XML.format(scaling=scaling, srs=crs.lower(), file=f)
                        mapnik.load_map_from_string(m, xml)
                        m.zoom_to_box(mapnik.Box2d(*box))
                        im = mapnik.Image(size, size)
                        mapnik.render(m, im)
                        imgs.append(np.frombuffer(im.to_string(), np.uint8).reshape(size, size, 4))
                    ys, xs = np.nonzero((imgs[0] != imgs[1]).any(2))
                    if not len(xs):
                        cells.append(f"{res:g} m: none")
                        continue
                    mx, my = box[0] + (xs + 0.5) * res, box[3] - (ys + 0.5) * res
                    far = max(
                        np.maximum(np.abs(mx - cx) - px / 2, 0).max(),
                        np.maximum(np.abs(my - cy) - px / 2, 0).max(),
                    )
                    cells.append(f"{res:g} m: {far / px:.2f} src px / {far / res:.1f} out px")
                print(f"{crs} {scaling}: " + "; ".join(cells))


if __name__ == "__main__":
    measure_reach() if sys.argv[1:] == ["reach"] else main()
