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
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
        self._xml = style.xml_without_datasources
        self._base = str(style.path.parent)
        self._style_path = style.path
        #: raster layers keep the datasource of the style (Mapnik reads and warps the file)
        self._rasters = {src.name for src in style.layers if src.kind in RASTER_TYPES}
        self.map, self._mlayers = self._load_map(self._xml)
        self._overlay: tuple[mapnik.Map, dict] | None = None
        self._unsafe: Any = _UNSET  # batch_unsafe(), once asked
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

    def _load_map(self, xml: str) -> tuple[mapnik.Map, dict]:
        """A Mapnik map of the style (no datasources), and its vector layers by name."""
        m = mapnik.Map(*self.size)
        try:
            mapnik.load_map_from_string(m, xml, True, self._base)
        except Exception as exc:  # Mapnik raises RuntimeError with its reason
            raise StyleError(f"{self._style_path}: Mapnik cannot load the style: {exc}") from exc
        srs = mapnik_srs(self.scheme.crs)
        m.srs = srs
        m.buffer_size = self.settings.buffer
        mlayers = {}
        for lyr in m.layers:
            if lyr.name in self._rasters:
                continue  # its own srs: Mapnik reprojects the raster
            lyr.srs = srs
            mlayers[lyr.name] = lyr
        return m, mlayers

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
            raise self._failed(level, mrow, mcol, exc) from None

    @staticmethod
    def _failed(level: int, mrow: int, mcol: int, exc: BaseException) -> RenderFailed:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RenderFailed(
            f"level {level}, meta-tile row {mrow} col {mcol}: Mapnik could not draw it "
            f"({reason}); look for a huge feature or label there"
        )

    def render_bounds(self, b: Bounds, resolution: float) -> mapnik.Image:
        """Draw ``b`` (which must fit the image size at ``resolution``) and return the image."""
        return self._draw(self.map, self._mlayers, b, resolution)

    def _draw(
        self,
        m: mapnik.Map,
        mlayers: dict,
        b: Bounds,
        resolution: float,
        im: mapnik.Image | None = None,
        detector: mapnik.LabelCollisionDetector | None = None,
    ) -> mapnik.Image:
        """Draw the held features meeting ``b``'s buffered extent with map ``m``, on ``im``
        (a new image by default) with ``detector`` (Mapnik's own by default)."""
        for name, lyr in mlayers.items():
            ds = mapnik.MemoryDatasource()
            index = self._index.get(name)
            if index is not None:
                pad = self._buffers.get(name, self.settings.buffer) * resolution + self._slack
                hits = index.query(b.xmin - pad, b.ymin - pad, b.xmax + pad, b.ymax + pad)
                for i in hits.tolist():
                    ds.add_feature(self._feature(name, i))
            lyr.datasource = ds
        m.zoom_to_box(mapnik.Box2d(b.xmin, b.ymin, b.xmax, b.ymax))
        if im is None:
            im = mapnik.Image(*self.size)
        if detector is None:
            mapnik.render(m, im)
        else:
            mapnik.render_with_detector(m, im, detector)
        return im

    def batch_unsafe(self) -> str | None:
        """Why this style's picture could change when a layer is drawn in several passes
        (:meth:`tiles_in_passes`); ``None`` when it can't. (Parsed once per renderer.)"""
        if self._unsafe is _UNSET:
            self._unsafe = batch_unsafe(self._xml)
        return self._unsafe

    def _overlay_map(self) -> tuple[mapnik.Map, dict]:
        """The style's map without its background: later passes draw over earlier ones."""
        if self._overlay is None:
            self._overlay = self._load_map(without_background(self._xml))
        return self._overlay

    def tiles_in_passes(
        self,
        level: int,
        items: Sequence[tuple[int, int, Sequence[tuple[int, int]] | None]],
        passes: Mapping[str, Iterable[LayerData]],
    ) -> list[TileResult]:
        """The tiles of meta-tiles ``items`` ((mrow, mcol, wanted)) of ``level``, drawn
        layer by layer (:meth:`metatiles_in_passes`)."""
        entries = [(level, mrow, mcol, wanted) for mrow, mcol, wanted in items]
        return [t for tiles in self.metatiles_in_passes(entries, passes) for t in tiles]

    def metatiles_in_passes(
        self,
        entries: Sequence[tuple[int, int, int, Sequence[tuple[int, int]] | None]],
        passes: Mapping[str, Iterable[LayerData]],
    ) -> list[list[TileResult]]:
        """The tiles of each meta-tile of ``entries`` ((level, mrow, mcol, wanted), levels
        may differ), drawn layer by layer: one list per entry.

        ``passes`` gives per layer its features in batches, in full-scan order; a layer
        left out has no feature there. Each batch is one Mapnik render onto the same
        images, with the only layer active its own and one label collision detector per
        meta-tile for all passes, and only the first pass paints the background. For a
        style :meth:`batch_unsafe` passes, the picture is that of one render of every
        feature, while only one batch is held at a time (tests compare the bytes).
        A batch may hold features a meta-tile does not reach: each keeps those meeting
        its buffered extent, in the batch's order.
        """
        meta = self.settings.metatile
        bounds = [metatile_bounds(self.scheme, lv, r, c, meta) for lv, r, c, _w in entries]
        res = [self.scheme.resolution(lv) for lv, _r, _c, _w in entries]
        images: list[mapnik.Image | None] = [None] * len(entries)
        detectors = [mapnik.LabelCollisionDetector(self.map) for _ in entries]
        active = {lyr.name: lyr.active for lyr in self.map.layers}
        try:
            for lyr in self.map.layers:
                if lyr.name in self._rasters:  # drawn from the style's own datasource
                    batches: Iterable[LayerData | None] = (None,)
                elif lyr.name in passes:
                    batches = passes[lyr.name]
                else:
                    continue
                it = iter(batches)
                while True:
                    self.use_layers({})  # let the last batch go before reading the next
                    batch = next(it, _DONE)
                    if batch is _DONE:
                        break
                    self.use_layers({lyr.name: batch} if batch is not None else {})
                    del batch
                    for i, b in enumerate(bounds):
                        m, mlayers = (
                            (self.map, self._mlayers) if images[i] is None else self._overlay_map()
                        )
                        for other in m.layers:
                            other.active = other.name == lyr.name and active[other.name]
                        try:
                            images[i] = self._draw(m, mlayers, b, res[i], images[i], detectors[i])
                        except (MemoryError, RuntimeError) as exc:
                            lv, mrow, mcol, _w = entries[i]
                            raise self._failed(lv, mrow, mcol, exc) from None
        finally:
            for m in (self.map, self._overlay[0] if self._overlay else None):
                for other in m.layers if m is not None else ():
                    other.active = active[other.name]
            self.use_layers({})
        out: list[list[TileResult]] = []
        for (lv, mrow, mcol, wanted), b, r, im in zip(entries, bounds, res, images, strict=True):
            if im is None:  # no layer has a feature here: the background alone
                im = self._draw(self.map, self._mlayers, b, r)
            out.append(self._cut(im, lv, mrow, mcol, set(wanted) if wanted else None))
        return out

    def tiles(
        self, level: int, mrow: int, mcol: int, wanted: set[tuple[int, int]] | None = None
    ) -> list[TileResult]:
        """Render a meta-tile and return its tiles, encoded; ``None`` data = blank tile.

        A tile is blank when every pixel equals the style's background.
        ``wanted`` limits the output to those (row, col); by default every tile of
        the meta-tile is returned.
        """
        return self._cut(self.render_metatile(level, mrow, mcol), level, mrow, mcol, wanted)

    def _cut(
        self,
        im: mapnik.Image,
        level: int,
        mrow: int,
        mcol: int,
        wanted: set[tuple[int, int]] | None,
    ) -> list[TileResult]:
        """Mapnik's image of a meta-tile, cut into encoded tiles."""
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


_DONE: Any = object()  # the end of an iterator
_UNSET: Any = object()  # not worked out yet

#: attributes of ``<Map>`` that paint the background
_BACKGROUND = (
    "background-color",
    "background-image",
    "background-image-comp-op",
    "background-image-opacity",
)


def without_background(xml: str) -> str:
    """The style's XML without its background (a pass drawing over earlier ones)."""
    root = ET.fromstring(xml)
    for a in _BACKGROUND:
        root.attrib.pop(a, None)
    return ET.tostring(root, encoding="unicode")


def batch_unsafe(xml: str) -> str | None:
    """Why drawing a layer's features in consecutive passes (one label collision detector,
    only that layer active) could differ from one render of them all; ``None`` if it can't.

    Mapnik draws a layer style by style, and within a style feature by feature straight
    onto the image, so batches in order draw the same picture, except where it draws a
    layer or a style into a buffer of its own and composites it (``opacity``,
    ``comp-op``, image filters), groups features (``group-by``), draws all features once
    per style (several styles on one layer), or clears the labels at each layer start
    (``clear-label-cache``, which every pass would repeat). And Mapnik demultiplies the
    image after each render and the next one takes it as premultiplied, which is exact
    only where every pixel is opaque: the map needs an opaque ``background-color``, and
    no ``comp-op`` anywhere (one could clear pixels).
    """
    root = ET.fromstring(xml)
    bg = (root.get("background-color") or "").strip()
    try:
        opaque = bool(bg) and mapnik.Color(bg).a == 255
    except (RuntimeError, ValueError, TypeError):
        opaque = False
    if not opaque:  # Mapnik demultiplies after each render: exact only where alpha is 255
        return "the map has no opaque background-color"
    for el in root.iter():
        if el.get("comp-op") or el.get("background-image-comp-op"):
            return f"<{el.tag}> has a comp-op"
    styles = {st.get("name"): st for st in root.iter("Style")}
    for lyr in root.iter("Layer"):
        name = lyr.get("name")
        if (lyr.get("clear-label-cache") or "").strip().lower() in ("true", "on", "1", "yes"):
            return f"layer {name!r} clears the label cache"
        for attr in ("comp-op", "opacity", "group-by"):
            value = (lyr.get(attr) or "").strip()
            if value and not (attr == "opacity" and _is_one(value)):
                return f"layer {name!r} has {attr}"
        names = [(e.text or "").strip() for e in lyr.findall("StyleName")]
        if len(names) > 1:
            return f"layer {name!r} has {len(names)} styles"
        for sname in names:
            st = styles.get(sname)
            if st is None:
                continue
            for attr in ("comp-op", "opacity", "image-filters", "direct-image-filters"):
                value = (st.get(attr) or "").strip()
                if value and not (attr == "opacity" and _is_one(value)):
                    return f"style {sname!r} has {attr}"
    return None


def _is_one(value: str) -> bool:
    try:
        return float(value) == 1.0
    except ValueError:
        return False


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
