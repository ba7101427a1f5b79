"""Read each style layer's features, in a stable order.

Files are read with GDAL (pyogrio) in the dataset's own full-scan order (file order
for shapefiles, row order for GeoPackage/SQLite), never an index order, so that what
Mapnik draws does not depend on where unrelated features are stored
(docs: findings.md §2). PostGIS tables are read with psycopg, ordered by their key
(:mod:`tiledelta.sources.postgis`). Both readers give a :class:`RawLayer`, which one code
path (:func:`~tiledelta.sources.types.layer_data`) turns into :class:`LayerData`.
Geometries are returned in the tiling scheme's CRS, with their bounding boxes and a
fingerprint of what the renderer sees.
"""

from __future__ import annotations

import logging
import time

from tiledelta.grid import Bounds
from tiledelta.project import Project
from tiledelta.sources import files, gdal, postgis
from tiledelta.sources.gdal import describe, list_layers
from tiledelta.sources.raster import RasterLayerData, check_raster_buffer, read_raster_layer
from tiledelta.sources.types import (
    LayerData,
    RawLayer,
    boxes_extent,
    data_extent,
    fingerprints,
    layer_data,
)
from tiledelta.style import RASTER_TYPES, LayerSource

__all__ = [
    "LayerData",
    "RasterLayerData",
    "RawLayer",
    "boxes_extent",
    "data_extent",
    "describe",
    "display_path",
    "fingerprints",
    "list_layers",
    "read_layer",
    "read_layers",
    "read_project_layer",
    "read_project_raster",
]

log = logging.getLogger(__name__)


def read_layer(
    src: LayerSource, target_crs: str, key: str | None = None, valid: Bounds | None = None
) -> LayerData:
    """Read every feature of ``src`` in a stable order, reprojected to ``target_crs``.

    Files are read with GDAL in full-scan order; PostGIS layers with psycopg in key order
    (:mod:`tiledelta.postgis`). Features with no geometry are skipped (Mapnik draws nothing
    for them). ``key`` names a field whose value identifies a feature across edits.
    ``valid`` is the scheme's extent: a feature outside it is a :class:`SourceError`.
    """
    raw = postgis.read_raw(src, key) if src.kind == "postgis" else gdal.read_raw(src, key)
    return layer_data(src, raw, target_crs, valid)


def display_path(src: LayerSource) -> str:
    """Where a layer's data is, fit to print: a PostGIS connection without its password
    (also a GDAL connection string, ``PG:... password=...``)."""
    if src.kind == "postgis":
        return postgis.where(src)
    return gdal.shown(src.path)


def read_project_layer(project: Project, src: LayerSource) -> LayerData:
    """One vector layer of ``project``, with what it was read from (``inputs``): its files
    hashed before the read and found unwritten after it (``sources.files``), when
    ``[update] trust_unchanged_files`` is on and the dataset's files can be told."""
    crs, key, valid = project.scheme.crs, project.key_field(src.name), project.scheme.extent
    trust = project.config.update.trust_unchanged_files
    inputs = files.observe(src, crs, key, valid) if trust else None
    data = read_layer(src, crs, key, valid)
    if inputs is not None and files.still_same(src, inputs):
        data.inputs = inputs
    return data


def read_project_raster(project: Project, src: LayerSource) -> RasterLayerData:
    """A raster layer's blocks, with the project's buffer check and ``trust_mtime``."""
    check_raster_buffer(src, project.settings.buffer)
    cfg = project.config.layers.get(src.name)
    return read_raster_layer(
        src,
        project.scheme.crs,
        project.scheme.extent,
        trust_mtime=bool(cfg and cfg.trust_mtime),
        state=project.state_dir / "state.sqlite",
    )


def read_layers(project: Project) -> dict[str, LayerData]:
    """Every style layer's features, in scheme CRS and stable order."""
    out: dict[str, LayerData] = {}
    for src in project.style.layers:
        t = time.perf_counter()
        if src.kind in RASTER_TYPES:  # blocks of pixels (sources/raster.py)
            out[src.name] = read_project_raster(project, src)
        else:
            out[src.name] = read_project_layer(project, src)
        log.info(
            "read %s: %d features in %.2f s", src.name, len(out[src.name]), time.perf_counter() - t
        )
    return out
