"""PNG encoders side by side on real Clatsop tiles: time per tile, bytes, decode check.

    .venv/bin/python bench/bench_encode.py [--levels 12,14,16,18] [--metatiles 8]
        [--repeat 3] [--quick]

Draws real meta-tiles (4x4 tiles of 256 px, 64 px buffer, bench/common.py's STYLE over the
Clatsop buildings shapefile) with Mapnik, cuts them into tiles, skips solid ones (one
colour) as a seed does, and encodes every tile with each variant: Mapnik's own options
(``png32:z=..``, ``s=``, ``f=``, png8 ``m=o|h`` and ``c=``), the PNG encoders of
``imagecodecs`` (libpng + zlib-ng, libspng), tiledelta's own encoder
(``tiledelta.render.encode``: the values of ``[cache] png_compression``), a minimal PNG
container over libdeflate, zlib-ng and ISA-L, and ``fpng``. Encoders that are not
installed are listed as missing. Every output is decoded with Pillow and with GDAL
(rasterio, /vsimem/) and compared with the RGBA pixels Mapnik drew: "exact" for lossless
variants, else the largest difference of any channel.

Times are the minimum over ``--repeat`` passes of one process (the machine's other load
adds noise: rerun on a quiet machine for firm figures).
"""

from __future__ import annotations

import argparse
import gc
import io
import re
import struct
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from common import STYLE, clatsop_shapefile

from tiledelta.render._mapnik import mapnik  # keeps GDAL's PROJ_LIB (rasterio decodes below)
from tiledelta.render.encode import PNG_COMPRESSION

TILE = 256
META = 4
BUFFER = 64
ORIGIN = 20037508.342789244
BASE = "mapnik png32"  # Mapnik's default PNG: every ratio is against it
Encoder = Callable[[np.ndarray, object], bytes]


@dataclass
class Tiles:
    level: int
    views: list  # Mapnik image views (their images kept alive)
    rgba: list[np.ndarray]  # (256, 256, 4) uint8, C-contiguous slices of the meta-tile


def sample_tiles(levels: list[int], per_level: int, seed: int = 13) -> dict[int, Tiles]:
    """Render ``per_level`` meta-tiles holding buildings at each level; keep non-solid tiles."""
    import pyogrio.raw
    import shapely

    shp = clatsop_shapefile()
    _meta, _fids, wkb, _values = pyogrio.raw.read(str(shp), columns=[])
    pts = shapely.get_coordinates(shapely.centroid(shapely.from_wkb(wkb)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pts))
    m = mapnik.Map(TILE * META, TILE * META)
    mapnik.load_map_from_string(m, STYLE.format(kind="shape", path=shp))
    m.buffer_size = BUFFER
    out = {}
    for level in levels:
        span = 2 * ORIGIN / 2**level * META  # one meta-tile, metres
        seen: list[tuple[int, int]] = []
        for k in order:
            x, y = pts[k]
            key = (int((ORIGIN - y) // span), int((x + ORIGIN) // span))
            if key not in seen:
                seen.append(key)
            if len(seen) == per_level:
                break
        views, arrays = [], []
        for mrow, mcol in seen:
            xmin, ymax = -ORIGIN + mcol * span, ORIGIN - mrow * span
            m.zoom_to_box(mapnik.Box2d(xmin, ymax - span, xmin + span, ymax))
            im = mapnik.Image(TILE * META, TILE * META)
            mapnik.render(m, im)
            assert not im.premultiplied()
            whole = np.frombuffer(im.to_string(), np.uint8).reshape(TILE * META, TILE * META, 4)
            for j in range(META):
                for i in range(META):
                    v = im.view(i * TILE, j * TILE, TILE, TILE)
                    if v.is_solid():
                        continue
                    views.append((im, v))
                    sl = whole[j * TILE : (j + 1) * TILE, i * TILE : (i + 1) * TILE]
                    arrays.append(np.ascontiguousarray(sl))
        out[level] = Tiles(level, views, arrays)
    return out


# --- a minimal PNG container (for the bare deflate libraries) --------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _scanlines(a: np.ndarray, up: bool) -> bytes:
    h, w, c = a.shape
    rows = np.empty((h, 1 + w * c), np.uint8)
    flat = a.reshape(h, w * c)
    if up:  # PNG filter 2 (Up): each byte minus the byte above, mod 256
        rows[0, 0] = 0
        rows[1:, 0] = 2
        rows[0, 1:] = flat[0]
        np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    else:
        rows[:, 0] = 0
        rows[:, 1:] = flat
    return rows.tobytes()


def container(compress: Callable[[bytes], bytes], up: bool) -> Encoder:
    def enc(a: np.ndarray, _v) -> bytes:
        h, w, _ = a.shape
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", compress(_scanlines(a, up)))
            + _chunk(b"IEND", b"")
        )

    return enc


def variants() -> tuple[dict[str, Encoder], list[str]]:
    """Name -> encoder(rgba array, mapnik view); and the names of encoders not installed."""
    out: dict[str, Encoder] = {}
    missing: list[str] = []

    def mk(fmt: str) -> Encoder:
        return lambda _a, v: v[1].to_string(fmt)

    for fmt in (
        ["png32"]
        + [f"png32:z={z}" for z in range(1, 10)]
        + [f"png32:s={s}" for s in ("filtered", "huff", "rle", "fixed")]
        + [f"png32:f={f}" for f in ("no", "fast", "sub", "up", "paeth", "all")]
        + ["png32:z=1:s=rle", "png32:z=1:f=sub", "png32:z=1:f=up", "png32:z=3:f=up"]
        + ["png32:z=2:f=up", "png32:z=1:s=rle:f=sub", "png32:z=4:f=up"]
        + ["png8", "png8:m=o", "png8:m=h:c=256", "png8:m=o:c=256", "png8:m=h:c=64"]
        + ["png8:m=o:c=64", "png8:m=h:z=1", "png8:m=o:z=1"]
    ):
        out[f"mapnik {fmt}"] = mk(fmt)
    try:
        mapnik.Image(1, 1).to_string("png32:e=miniz")
    except Exception as exc:  # Mapnik 4 removed miniz
        missing.append(f"mapnik png32:e=miniz ({exc})")

    from tiledelta.config import RenderSettings
    from tiledelta.render.renderer import encode

    for name in PNG_COMPRESSION:  # through the renderer's own call, as a seed encodes
        st = RenderSettings(png_compression=name)
        out[f"tiledelta {name}"] = lambda a, v, st=st: encode(v[1], st, False, a)

    try:
        import imagecodecs as ic

        F, S = ic.PNG.FILTER, ic.PNG.STRATEGY
        for lv in (1, 2, 3, 4, 6, 9):
            for fname, flt in (("none", F.NONE), ("sub", F.SUB), ("up", F.UP), ("all", F.ALL)):
                out[f"imagecodecs png z={lv} f={fname}"] = lambda a, _v, lv=lv, f=flt: (
                    ic.png_encode(a, lv, filter=f)
                )
        for lv in (1, 2):
            out[f"imagecodecs png z={lv} rle f=sub"] = lambda a, _v, lv=lv: ic.png_encode(
                a, lv, strategy=S.RLE, filter=F.SUB
            )
        for lv in (1, 6):
            out[f"imagecodecs spng z={lv}"] = lambda a, _v, lv=lv: ic.spng_encode(a, lv)
        for lv in (1, 2, 4, 6, 9, 12):
            for up in (False, True):
                out[f"libdeflate z={lv} f={'up' if up else 'none'}"] = container(
                    lambda b, lv=lv: ic.deflate_encode(b, lv), up
                )
        for lv in (1, 2, 3, 4, 6):
            for up in (False, True):
                out[f"zlib-ng(ic) z={lv} f={'up' if up else 'none'}"] = container(
                    lambda b, lv=lv: ic.zlibng_encode(b, lv), up
                )
    except ImportError:
        missing.append("imagecodecs (pip install imagecodecs)")
    try:
        import deflate

        for lv in (1, 4, 6):
            out[f"deflate(pkg) z={lv} f=up"] = container(
                lambda b, lv=lv: deflate.zlib_compress(b, lv), up=True
            )
    except ImportError:
        missing.append("deflate (pip install deflate)")
    try:
        from isal import isal_zlib

        for lv in (0, 1, 2, 3):
            for up in (False, True):
                out[f"isal z={lv} f={'up' if up else 'none'}"] = container(
                    lambda b, lv=lv: isal_zlib.compress(b, lv), up
                )
    except ImportError:
        missing.append("isal (pip install isal)")
    try:
        from zlib_ng import zlib_ng

        for lv in (1, 2, 3):
            out[f"zlib-ng(pkg) z={lv} f=up"] = container(
                lambda b, lv=lv: zlib_ng.compress(b, lv), up=True
            )
    except ImportError:
        missing.append("zlib-ng (pip install zlib-ng)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from fpng import fpng_ext

        out["fpng"] = lambda a, _v: fpng_ext.encode_ndarray(a)  # type: ignore[attr-defined]
    except Exception:
        missing.append("fpng (pip install fpng)")
    return out, missing


# --- decode checks -----------------------------------------------------------------------------


def _pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def _gdal(data: bytes) -> np.ndarray:
    import rasterio
    from rasterio.io import MemoryFile

    with rasterio.Env(), MemoryFile(data) as mf, mf.open() as ds:
        arr = ds.read()
        if ds.count == 1 and ds.colorinterp[0].name == "palette":
            cmap = ds.colormap(1)
            lut = np.zeros((256, 4), np.uint8)
            for k, rgba in cmap.items():
                lut[k] = rgba
            return lut[arr[0]]
        px = np.moveaxis(arr, 0, -1)
        if px.shape[2] == 3:
            px = np.concatenate([px, np.full(px.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return px


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def check(enc: Encoder, tiles: Tiles) -> tuple[int, int]:
    """Largest channel difference (Pillow, GDAL) between the decoded tiles and the source."""
    worst = [0, 0]
    for a, v in zip(tiles.rgba, tiles.views, strict=True):
        data = enc(a, v)
        worst[0] = max(worst[0], _diff(_pillow(data), a))
        worst[1] = max(worst[1], _diff(_gdal(data), a))
    return worst[0], worst[1]


def measure_all(
    encs: dict[str, Encoder], tiles: Tiles, repeat: int
) -> dict[str, tuple[float, float]]:
    """Name -> (µs per tile, bytes per tile): the fastest of ``repeat`` passes over the
    tiles, the passes of all variants interleaved so that load changes hit them alike."""
    pairs = list(zip(tiles.rgba, tiles.views, strict=True))
    sizes, best = {}, {}
    for name, enc in encs.items():
        try:
            sizes[name] = sum(len(enc(a, v)) for a, v in pairs) / len(pairs)
            best[name] = float("inf")
        except Exception as exc:
            print(f"{name}: failed: {type(exc).__name__}: {exc}".splitlines()[0])
    gc.disable()
    try:
        for _ in range(repeat):
            for name in best:
                enc = encs[name]
                t = time.perf_counter()
                for a, v in pairs:
                    enc(a, v)
                best[name] = min(best[name], time.perf_counter() - t)
    finally:
        gc.enable()
    return {n: (best[n] / len(pairs) * 1e6, sizes[n]) for n in best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--levels", default="12,14,16,18")
    ap.add_argument("--metatiles", type=int, default=8, help="meta-tiles drawn per level")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="a regular expression: the variants to run (and png32)")
    ap.add_argument("--no-check", action="store_true", help="skip the decode checks")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    tiles = sample_tiles(levels, args.metatiles)
    encs, missing = variants()
    if args.only:
        pat = re.compile(args.only)
        encs = {k: e for k, e in encs.items() if k == BASE or pat.search(k)}
    res = {lv: measure_all(encs, t, args.repeat) for lv, t in tiles.items()}
    n = {lv: len(t.rgba) for lv, t in tiles.items()}
    n_all = sum(n.values())
    counts = ", ".join(f"z{lv}: {k}" for lv, k in n.items())
    print(f"non-solid tiles per level ({args.metatiles} meta-tiles drawn per level): {counts}")
    print(f"µs = encode time per tile; ratio = bytes / {BASE}'s bytes on the same tiles;")
    print("all = every level's tiles; speed = Mapnik png32's time / this time;")
    print("decode = largest channel difference from Mapnik's RGBA, Pillow / GDAL (0 = exact)\n")
    head = f"{'variant':32}" + "".join(
        f"{'z' + str(lv) + ' µs':>8}{'bytes':>7}{'ratio':>6}" for lv in levels
    )
    head += f"{'all µs':>8}{'speed':>7}{'size':>6}  decode"
    print(head)
    print("-" * len(head))

    def total(name: str, k: int) -> float:
        return sum(res[lv][name][k] * n[lv] for lv in levels)

    for name in res[levels[0]]:
        if not all(name in res[lv] for lv in levels):
            continue
        row = f"{name:32}"
        for lv in levels:
            us, size = res[lv][name]
            row += f"{us:>8.0f}{size:>7.0f}{size / res[lv][BASE][1]:>6.2f}"
        t, b = total(name, 0), total(name, 1)
        row += f"{t / n_all:>8.0f}{total(BASE, 0) / t:>6.1f}x{b / total(BASE, 1):>6.2f}"
        if not args.no_check:
            worst = [check(encs[name], tiles[lv]) for lv in levels]
            p, g = max(w[0] for w in worst), max(w[1] for w in worst)
            row += "  exact" if p == g == 0 else f"  max diff {p} / {g}"
        print(row, flush=True)
    for m in missing:
        print(f"not available: {m}")


if __name__ == "__main__":
    main()
