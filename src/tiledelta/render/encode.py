"""PNG tiles written by libdeflate behind a minimal PNG writer (``[cache] png_compression``).

Mapnik's own ``png32`` (zlib level 6, no row filter) is two thirds of a seed's work. The
same pixels, the same colour type (8-bit RGBA) and the same row filter (none), compressed
by libdeflate instead of zlib, give files of about the same size several times faster
(docs/encoding.md has the measurements, ``bench/bench_encode.py`` prints them):

- ``"fast"`` (the default): libdeflate level 1;
- ``"small"``: libdeflate level 9, smaller than Mapnik's files and still faster;
- ``"mapnik"``: Mapnik's own ``png32``, the bytes tiledelta wrote before this setting.

The writer takes straight-alpha RGBA pixels as a numpy array (a tile's slice of a
meta-tile's buffer, any row stride): no Mapnik object. A given version of libdeflate
writes the same bytes for the same pixels on every platform.
"""

from __future__ import annotations

import struct

import numpy as np

from tiledelta.config import PNG_COMPRESSIONS
from tiledelta.errors import RenderUnavailable

try:
    import deflate
except ImportError:  # the render extra brings it; the core never encodes
    deflate = None  # type: ignore[assignment]

#: ``[cache] png_compression`` value -> libdeflate level (None: Mapnik's encoder)
PNG_COMPRESSION: dict[str, int | None] = {"fast": 1, "small": 9, "mapnik": None}
assert tuple(PNG_COMPRESSION) == PNG_COMPRESSIONS

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def uses_mapnik(compression: str) -> bool:
    """True when ``compression`` means Mapnik's own PNG encoder."""
    return PNG_COMPRESSION[compression] is None


def _chunk(kind: bytes, data: bytes | bytearray) -> bytes:
    assert deflate is not None
    crc = deflate.crc32(data, deflate.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(pixels: np.ndarray, compression: str = "fast") -> bytes:
    """An 8-bit RGBA PNG of ``pixels`` ((height, width, 4) uint8, straight alpha).

    Rows are written unfiltered (filter type 0, as Mapnik's ``png32`` does) and the image
    data compressed by libdeflate at the level ``compression`` names.
    """
    level = PNG_COMPRESSION.get(compression)
    if level is None:
        raise ValueError(f"png_compression {compression!r} is not tiledelta's own encoder")
    if deflate is None:
        raise RenderUnavailable(
            f'png_compression = "{compression}" needs the deflate package (libdeflate), '
            'which is not installed; install it with: pip install "tiledelta[render]", '
            'or set [cache] png_compression = "mapnik"'
        )
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise ValueError(f"expected (height, width, 4) uint8 RGBA, not {pixels.shape}")
    h, w, _ = pixels.shape
    rows = np.empty((h, 1 + 4 * w), np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = pixels.reshape(h, 4 * w)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no interlace
    idat = deflate.zlib_compress(rows, level)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(b"IDAT", idat), _IEND))
