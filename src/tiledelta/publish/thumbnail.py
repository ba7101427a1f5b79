"""Item thumbnails: the whole map's data extent in one small PNG (as ArcGIS items show)."""

from __future__ import annotations

from pathlib import Path

from tiledelta.errors import ConfigError
from tiledelta.grid import Bounds
from tiledelta.project import Project
from tiledelta.sources import LayerData, data_extent, read_layers


def parse_size(text: str) -> tuple[int, int]:
    """ "600x400" -> (600, 400)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"size {text!r}: use WIDTHxHEIGHT, e.g. 600x400") from exc
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ConfigError(f"size {text!r}: width and height must be 16-4096 pixels")
    return w, h


def fit(bounds: Bounds, size: tuple[int, int], margin: float = 0.05) -> tuple[Bounds, float]:
    """``bounds`` grown by ``margin`` and to the image's aspect ratio; and the resolution."""
    w, h = size
    cx, cy = (bounds.xmin + bounds.xmax) / 2, (bounds.ymin + bounds.ymax) / 2
    bw = max(bounds.xmax - bounds.xmin, 1.0) * (1 + 2 * margin)
    bh = max(bounds.ymax - bounds.ymin, 1.0) * (1 + 2 * margin)
    res = max(bw / w, bh / h)
    return Bounds(cx - w * res / 2, cy - h * res / 2, cx + w * res / 2, cy + h * res / 2), res


def render_thumbnail(
    project: Project,
    size: tuple[int, int] = (600, 400),
    layers: dict[str, LayerData] | None = None,
) -> bytes:
    """A PNG of the map over its full data extent."""
    layers = layers if layers is not None else read_layers(project)
    extent = data_extent(layers) or project.scheme.extent
    if extent is None:
        raise ConfigError("the map has no features and the scheme no extent: nothing to draw")
    box, res = fit(extent, size)
    # Drawing needs Mapnik, an optional dependency: imported only here.
    from tiledelta.render.renderer import Renderer

    r = Renderer(project.style, project.scheme, layers, project.settings, size=size)
    return r.render_bounds(box, res).to_string("png32")


def write_thumbnail(project: Project, out: Path, size: tuple[int, int] = (600, 400)) -> Path:
    data = render_thumbnail(project, size)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
