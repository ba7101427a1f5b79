"""Render meta-tiles with Mapnik and cut them into encoded tiles.

Each meta-tile (``metatile`` × ``metatile`` tiles) is drawn once with a pixel
buffer around it, so labels and symbols are placed as if the map had no tile
edges, then sliced. Mapnik is given in-memory datasources holding exactly the
features whose bounding box meets the meta-tile's buffered extent, in the
layer's stable order (see :mod:`tiledelta.sources`); Mapnik applies the same
bounding-box test itself, so the picture equals what it would draw from the
full layer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import pyproj

from tiledelta.config import RenderSettings
from tiledelta.errors import RenderFailed, StyleError
from tiledelta.grid import Bounds, TilingScheme, metatile_bounds, query_pad
from tiledelta.render._mapnik import mapnik
from tiledelta.render.encode import encode_png, uses_mapnik
from tiledelta.render.index import BoxIndex, build_indexes
from tiledelta.render.stats import Solid, TileResult
from tiledelta.sources import LayerData
from tiledelta.style import RASTER_TYPES, Style


def mapnik_srs(crs: str) -> str:
    """A projection string Mapnik accepts for ``crs``."""
    c = pyproj.CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return f"epsg:{epsg}" if epsg else c.to_proj4()


class Renderer:
    """Draws meta-tiles of one style over preloaded layer data (one per process)."""

    def __init__(
        self,
        style: Style,
        scheme: TilingScheme,
        layers: dict[str, LayerData],
        settings: RenderSettings,
        size: tuple[int, int] | None = None,
        index: Mapping[str, BoxIndex | None] | None = None,
    ) -> None:
        """``index`` (:func:`~tiledelta.render.index.build_indexes` of ``layers``) is used
        as given, not rebuilt: the pool builds it once, before its workers fork."""
        self.scheme = scheme
        self.settings = settings
        meta = settings.metatile
        self.size = size or (meta * scheme.tile_width, meta * scheme.tile_height)
        self.map = mapnik.Map(*self.size)
        try:
            mapnik.load_map_from_string(
                self.map, style.xml_without_datasources, True, str(style.path.parent)
            )
        except Exception as exc:  # Mapnik raises RuntimeError with its reason
            raise StyleError(f"{style.path}: Mapnik cannot load the style: {exc}") from exc
        srs = mapnik_srs(scheme.crs)
        self.map.srs = srs
        self.map.buffer_size = settings.buffer
        self._mlayers = {}
        #: raster layers keep the datasource of the style (Mapnik reads and warps the file)
        self._rasters = {src.name for src in style.layers if src.kind in RASTER_TYPES}
        for lyr in self.map.layers:
            if lyr.name in self._rasters:
                continue  # its own srs: Mapnik reprojects the raster
            lyr.srs = srs
            self._mlayers[lyr.name] = lyr
        self._buffers = {
            lyr.name: (lyr.buffer_size if lyr.buffer_size is not None else settings.buffer)
            for lyr in style.layers
        }
        self._context = mapnik.Context()
        self.use_layers(layers, index)
        self._background = self._render_background()
        #: the packed RGBA value of a pixel where nothing is drawn
        self.background = self._background.get_pixel(0, 0)
        # float slack so the prefilter is never smaller than Mapnik's own query
        self._slack = query_pad(scheme, scheme.levels[0], 0)

    def _render_background(self) -> mapnik.Image:
        """What Mapnik paints where no feature is drawn."""
        kept = {lyr.name: lyr.datasource for lyr in self.map.layers if lyr.name in self._rasters}
        for lyr in self.map.layers:
            lyr.datasource = mapnik.MemoryDatasource()
        self.map.zoom_to_box(mapnik.Box2d(0, 0, 1, 1))
        im = mapnik.Image(*self.size)
        mapnik.render(self.map, im)
        for lyr in self.map.layers:
            if lyr.name in kept:
                lyr.datasource = kept[lyr.name]
        return im

    @property
    def opaque_background(self) -> bool:
        """True when the style paints every pixel (an opaque background colour)."""
        return (self.background >> 24) & 0xFF == 255

    def blank_tile(self) -> bytes:
        """One tile of pure background, encoded like every other tile."""
        view = self._background.view(0, 0, self.scheme.tile_width, self.scheme.tile_height)
        return encode(view, self.settings, opaque=(self.background >> 24) & 0xFF == 255)

    def use_layers(
        self, layers: dict[str, LayerData], index: Mapping[str, BoxIndex | None] | None = None
    ) -> None:
        """Draw from ``layers`` from now on, with their ``index`` (built when not given).

        Mapnik features are made from the WKB when a meta-tile first needs them, and kept.
        """
        self.layers = layers
        self._index = dict(index) if index is not None else build_indexes(layers)
        self._features: dict[str, list] = {name: [None] * len(d) for name, d in layers.items()}
        for data in layers.values():
            for a in data.attrs:
                self._context.push(a)

    def _feature(self, name: str, i: int):
        f = self._features[name][i]
        if f is None:
            data = self.layers[name]
            f = mapnik.Feature(self._context, i + 1)
            f.geometry = mapnik.Geometry.from_wkb(data.wkb[i])
            for a, col in data.attrs.items():
                v = col[i]
                if v is not None:
                    f[a] = v
            self._features[name][i] = f
        return f

    def render_metatile(self, level: int, mrow: int, mcol: int) -> mapnik.Image:
        """Draw one meta-tile and return Mapnik's image."""
        b = metatile_bounds(self.scheme, level, mrow, mcol, self.settings.metatile)
        try:
            return self.render_bounds(b, self.scheme.resolution(level))
        except (MemoryError, RuntimeError) as exc:  # Mapnik's std::bad_alloc, its errors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RenderFailed(
                f"level {level}, meta-tile row {mrow} col {mcol}: Mapnik could not draw it "
                f"({reason}); look for a huge feature or label there"
            ) from None

    def render_bounds(self, b: Bounds, resolution: float) -> mapnik.Image:
        """Draw ``b`` (which must fit the image size at ``resolution``) and return the image."""
        for name, lyr in self._mlayers.items():
            ds = mapnik.MemoryDatasource()
            index = self._index.get(name)
            if index is not None:
                pad = self._buffers.get(name, self.settings.buffer) * resolution + self._slack
                hits = index.query(b.xmin - pad, b.ymin - pad, b.xmax + pad, b.ymax + pad)
                for i in hits.tolist():
                    ds.add_feature(self._feature(name, i))
            lyr.datasource = ds
        self.map.zoom_to_box(mapnik.Box2d(b.xmin, b.ymin, b.xmax, b.ymax))
        im = mapnik.Image(*self.size)
        mapnik.render(self.map, im)
        return im

    def tiles(
        self, level: int, mrow: int, mcol: int, wanted: set[tuple[int, int]] | None = None
    ) -> list[TileResult]:
        """Render a meta-tile and return its tiles, encoded; ``None`` data = blank tile.

        A tile is blank when every pixel equals the style's background.
        ``wanted`` limits the output to those (row, col); by default every tile of
        the meta-tile is returned.
        """
        im = self.render_metatile(level, mrow, mcol)
        if im.premultiplied():  # Mapnik's PNG writer demultiplies too: the same pixels
            im.demultiply()
        meta = self.settings.metatile
        tw, th = self.scheme.tile_width, self.scheme.tile_height
        pixels = None  # the meta-tile's RGBA (one copy of Mapnik's buffer), when needed
        mixed = self.settings.fmt == "mixed"
        own_png = encoding(self.settings).startswith("png32+")  # tiledelta's PNG encoder
        out: list[TileResult] = []
        for j in range(meta):
            for i in range(meta):
                row, col = mrow * meta + j, mcol * meta + i
                if wanted is not None and (row, col) not in wanted:
                    continue
                x, y = i * tw, j * th
                view = im.view(x, y, tw, th)
                if view.is_solid():
                    colour = im.get_pixel(x, y)
                    data = (
                        None
                        if colour == self.background
                        else solid_tile(view, colour, self.settings)
                    )
                    out.append((level, row, col, data))
                    continue
                tile = None
                if own_png or mixed:
                    if pixels is None:
                        w, h = self.size
                        pixels = np.frombuffer(im.to_string(), dtype=np.uint8).reshape(h, w, 4)
                    tile = pixels[y : y + th, x : x + tw]
                opaque = mixed and tile is not None and tile[..., 3].min() == 255
                out.append((level, row, col, encode(view, self.settings, opaque, tile)))
        return out


#: Solid tiles already encoded in this process: (colour, width, height, encoding) -> bytes
_SOLID: dict[tuple[int, int, int, str], Solid] = {}
#: at most this many (a tile of one colour is a few hundred bytes)
SOLID_CACHE_SIZE = 1024
_SOLID_LOCK = threading.Lock()


def solid_tile(view, colour: int, settings: RenderSettings) -> Solid:
    """The encoded bytes of ``view``, a tile of one ``colour`` (Mapnik's packed RGBA):
    encoded the first time a process meets that colour, size and encoding, then shared."""
    opaque = (colour >> 24) & 0xFF == 255
    key = (colour, view.width(), view.height(), encoding(settings, opaque))
    data = _SOLID.get(key)
    if data is None:
        data = Solid(encode(view, settings, opaque))
        with _SOLID_LOCK:  # Dask workers may render in threads
            if len(_SOLID) >= SOLID_CACHE_SIZE:
                del _SOLID[next(iter(_SOLID))]  # the oldest
            data = _SOLID.setdefault(key, data)
    return data


def encoding(settings: RenderSettings, opaque: bool = False) -> str:
    """The encoding a tile gets, in Mapnik's words: ``png32`` (or ``png32+fast``,
    tiledelta's encoder at that ``png_compression``), ``png8``, ``jpeg75``.

    MIXED gives JPEG for ``opaque`` tiles and PNG for the others.
    """
    fmt = settings.fmt
    if fmt == "mixed":
        fmt = "jpeg" if opaque else "png"
    if fmt == "png":
        return (
            "png32"
            if uses_mapnik(settings.png_compression)
            else f"png32+{settings.png_compression}"
        )
    if fmt == "png8":
        return "png8"
    return f"jpeg{settings.quality}"


def encode(
    view, settings: RenderSettings, opaque: bool = False, pixels: np.ndarray | None = None
) -> bytes:
    """Encode a tile (a Mapnik image view) in the configured format.

    MIXED gives JPEG for ``opaque`` tiles and PNG for the others. PNG tiles go through
    :func:`~tiledelta.render.encode.encode_png` at the ``png_compression`` set (unless
    that is "mapnik"), from ``pixels`` (the view's RGBA, straight alpha) when given.
    """
    enc = encoding(settings, opaque)
    if enc.startswith("png32+"):
        if pixels is None:
            raw = np.frombuffer(view.to_string(), dtype=np.uint8)
            pixels = raw.reshape(view.height(), view.width(), 4)
        return encode_png(pixels, settings.png_compression)
    return view.to_string(enc)
