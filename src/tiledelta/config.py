"""``tiledelta.toml`` as validated, frozen models.

Every key is checked once, when the file is loaded (:func:`parse_config`): types and
ranges, the syntax of ``levels`` and ``quiet_hours``, the extent, and the rules that
tie keys together. A bad value is one :class:`~tiledelta.errors.ConfigError` line
naming the key. Rules that need the tiling scheme (which levels it has) are checked
by :class:`tiledelta.project.Project` right after.

Models are frozen: code that needs another configuration makes a copy
(``config.model_copy(update=...)``) or uses :meth:`tiledelta.project.Project.updated`.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tiledelta.errors import ConfigError

PROJECT_FILE = "tiledelta.toml"

#: Tile encodings a cache can hold.
FORMATS = ("png", "png8", "jpeg", "mixed")
#: How PNG tiles are compressed (``[cache] png_compression``, render/encode.py,
#: docs/encoding.md): libdeflate level 1, libdeflate level 9, or Mapnik's own ``png32``.
PngCompression = Literal["fast", "small", "mapnik"]
PNG_COMPRESSIONS: tuple[str, ...] = get_args(PngCompression)

_FROZEN = ConfigDict(extra="forbid", frozen=True)


# --- small value types ---------------------------------------------------------------------


def parse_window(window: str) -> tuple[dt.time, dt.time]:
    """``"HH:MM-HH:MM"`` as (start, end); :class:`ValueError` when malformed."""
    start_s, sep, end_s = window.partition("-")
    if not sep:
        raise ValueError(f"{window!r}: use HH:MM-HH:MM, e.g. 22:00-06:00")
    try:
        return dt.time.fromisoformat(start_s.strip()), dt.time.fromisoformat(end_s.strip())
    except ValueError:
        raise ValueError(f"{window!r}: use HH:MM-HH:MM, e.g. 22:00-06:00") from None


def in_window(window: str | None, now: dt.time | None = None) -> bool:
    """True when ``now`` lies in a "HH:MM-HH:MM" window (which may wrap past midnight)."""
    if not window:
        return True
    start, end = parse_window(window)
    now = now or dt.datetime.now().time()
    return start <= now < end if start <= end else (now >= start or now < end)


@dataclass(frozen=True)
class RenderSettings:
    """How meta-tiles are drawn and encoded (the part of the config the renderer needs)."""

    metatile: int = 4
    buffer: int = 64
    fmt: str = "png"
    quality: int = 75
    #: how PNG tiles (format png, and mixed's non-opaque tiles) are compressed
    png_compression: str = "fast"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.fmt!r}")
        if self.png_compression not in PNG_COMPRESSIONS:
            raise ValueError(
                f"png_compression must be one of {', '.join(PNG_COMPRESSIONS)}, "
                f"not {self.png_compression!r}"
            )
        if not 1 <= self.metatile <= 16:
            raise ValueError("metatile must be between 1 and 16")
        if not 0 <= self.buffer <= 1024:
            raise ValueError("buffer must be between 0 and 1024 pixels")
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be between 1 and 100")


# --- sections ------------------------------------------------------------------------------


class CacheConfig(BaseModel):
    """``[cache]``: where tiles go and how they are encoded."""

    model_config = _FROZEN

    kind: Literal["compact", "mbtiles", "xyz"] = "compact"
    path: str = "cache"
    format: Literal["png", "png8", "jpeg", "mixed"] = "png"
    quality: int = Field(75, ge=1, le=100)
    #: PNG tiles (format "png", mixed's non-opaque tiles): "fast" (libdeflate level 1, files
    #: ~3 % larger than Mapnik's), "small" (level 9, ~7 % smaller), "mapnik" (Mapnik's own
    #: png32, several times slower); docs/encoding.md has the measured trade-offs
    png_compression: PngCompression = "fast"
    #: Background-only tiles over [render] extent (else the data's extent): "auto" stores them
    #: in a compact cache when the style's background is opaque (one shared copy per bundle,
    #: as ArcGIS serves a tile there); "store" always; "skip" never (clients paint the gap).
    blank_tiles: Literal["auto", "skip", "store"] = "auto"


class RenderConfig(BaseModel):
    """``[render]``: meta-tiles, buffer, processes, rate cap, extent."""

    model_config = _FROZEN

    metatile: int = Field(4, ge=1, le=16)
    buffer: int = Field(64, ge=0, le=1024)
    processes: int = Field(0, ge=0, description="0 = all cores")
    max_tiles_per_second: float | None = Field(
        None, gt=0, description="cap on the render rate, for shared machines"
    )
    extent: tuple[float, float, float, float] | None = None
    #: seconds one meta-tile may take to draw before the run stops naming it
    metatile_timeout: float = Field(300.0, gt=0)
    #: "local": a process pool on this machine; "dask": a Dask cluster (docs/dask.md)
    engine: Literal["local", "dask"] = "local"
    #: the Dask scheduler (tcp://host:8786); none with engine "dask" starts a LocalCluster
    scheduler: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ws|wss)://\S+$")
    #: on Dask, the most features a render task holds at once; a task needing more reads
    #: and draws them in batches (the same picture; docs/dask.md). 0: no limit
    task_features: int = Field(50_000, ge=0)

    @field_validator("extent")
    @classmethod
    def _extent(cls, v: tuple[float, float, float, float] | None):
        if v is not None:
            xmin, ymin, xmax, ymax = v
            if not all(map(_finite, v)):
                raise ValueError("the extent must be four finite numbers")
            if not (xmin < xmax and ymin < ymax):
                raise ValueError("give [xmin, ymin, xmax, ymax] with xmin < xmax and ymin < ymax")
        return v


class LayerConfig(BaseModel):
    """``[layers.NAME]``: per-layer settings."""

    model_config = _FROZEN

    key: str | None = None
    #: overrides ``[update] max_delete_share`` for this layer
    max_delete_share: float | None = Field(None, ge=0, le=1)
    #: a Pro map's layer read from here instead of its own data connection (e.g. a FileGDB
    #: copy of an enterprise layer: "exports/county.gdb/taxlots", or "PG:..." with ``layer``)
    source: str | None = None
    layer: str | None = None  # the layer / table inside ``source``
    where: str | None = None  # GDAL where clause used instead of the map's definition query
    #: raster layers: a file whose size, modification time and header are unchanged keeps
    #: its block fingerprints without being read again (docs/rasters.md: what that trusts)
    trust_mtime: bool = False


class UpdateConfig(BaseModel):
    """``[update]``: guards on what an update may do unasked."""

    model_config = _FROZEN

    #: an update that would delete more than this share of a layer's features stops
    #: (``--allow-mass-delete`` lets it through)
    max_delete_share: float = Field(0.2, ge=0, le=1)
    #: a file-backed layer whose files are byte for byte those of the last build (same
    #: sizes and content hashes; docs/detection.md) is neither fingerprinted nor diffed;
    #: ``false`` (or ``--full-compare``) compares every feature every run
    trust_unchanged_files: bool = True


class ArcGISConfig(BaseModel):
    """``[arcgis]``: the cached map service tiledelta updates on ArcGIS Server."""

    model_config = _FROZEN

    server: str = Field(description="e.g. https://gis.example.org/server")
    service: str = Field(description="Folder/Name of the MapServer")
    portal: str | None = None  # e.g. https://gis.example.org/portal (federated servers)
    verify: bool | str = True  # TLS verification, or the path of a private CA bundle
    token_minutes: int = Field(60, ge=5, le=1440)
    thread_count: int = Field(2, ge=-1, description="caching instances; -1 = all")
    when_busy: Literal["wait", "stop"] = "wait"
    busy_timeout_minutes: float = Field(30, ge=0)
    quiet_hours: str | None = None  # e.g. "22:00-06:00": server jobs run only then
    job_timeout_minutes: float = Field(120, gt=0)
    poll_seconds: float = Field(2.0, gt=0)
    #: how long a job that is cancelling, or in a state tiledelta does not know, is followed
    settle_seconds: float = Field(120.0, gt=0)
    #: uploads larger than this go in parts of this size (MB; portals want >= 5 but the last)
    part_mb: float = Field(20, gt=0, le=1024)
    #: `update --via package`: "auto" = a hosted tile layer when the service is in Hosted/
    service_type: Literal["auto", "map-service", "hosted-tile-layer"] = "auto"
    keep_patch_item: bool = False  # keep the patch package's portal item after the import
    cache_task: str = "System/CachingControllers/GPServer/Manage Map Cache Tiles"
    #: pixels per supertile the server draws: "auto" reads the service's antialiasing
    #: (2048 with, 4096 without; 2048 when the service does not say)
    supertile: Literal["auto", 2048, 4096] = "auto"
    sd: str | None = None  # a staged .sd to upload when arcpy is not available
    aprx: str | None = None  # ArcGIS Pro project, for publishing with arcpy
    map: str | None = None  # map name inside the .aprx
    #: a stand-alone ArcGIS Server's connection file (.ags): publish with a
    #: STANDALONE_SERVER draft instead of a federated one (docs/arcgis.md)
    server_connection: str | None = None
    item_id: str | None = None  # portal item for the thumbnail / tile package / run summaries
    describe_runs: bool = False  # append each publish's run summary to the item description

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, v: str | None) -> str | None:
        if v:
            parse_window(v)
        return v or None


class EmailConfig(BaseModel):
    """``[notify.email]``: an SMTP server and the recipients."""

    model_config = _FROZEN

    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False  # implicit TLS (SMTPS, usually port 465) instead of STARTTLS
    sender: str
    to: list[str] = Field(min_length=1)
    subject_prefix: str = "[tiledelta]"
    cafile: str | None = None  # CA bundle for a server with a private certificate
    timeout: float = Field(30.0, gt=0)


class WebhookConfig(BaseModel):
    """``[notify.webhook]``: a URL that receives a JSON post."""

    model_config = _FROZEN

    url: str | None = None  # default: NOTIFY_WEBHOOK_URL from the environment or .env
    kind: Literal["slack", "teams", "json"] = "json"
    verify: bool | str = True  # TLS verification, or the path of a private CA bundle
    timeout: float = Field(10.0, gt=0)


class NotifyConfig(BaseModel):
    """``[notify]``: when to tell whom."""

    model_config = _FROZEN

    on: Literal["failure", "success", "always"] = "failure"
    skip_unchanged: bool = True  # no success message for a run that changed no tile
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None


class ProjectConfig(BaseModel):
    """The whole ``tiledelta.toml``."""

    model_config = _FROZEN

    style: str | None = None  # a Mapnik XML style, or:
    map: str | None = None  # an ArcGIS Pro map: .aprx, .mapx or .lyrx (docs/pro-maps.md)
    map_name: str | None = None  # which map of the .aprx
    scheme: str = "web-mercator"
    levels: str = "0-19"
    cache: CacheConfig = CacheConfig()
    render: RenderConfig = RenderConfig()
    layers: dict[str, LayerConfig] = {}
    update: UpdateConfig = UpdateConfig()
    arcgis: ArcGISConfig | None = None
    notify: NotifyConfig | None = None

    @model_validator(mode="after")
    def _cross_fields(self) -> ProjectConfig:
        if (self.style is None) == (self.map is None):
            raise ValueError(
                'give either style = "map.xml" (Mapnik XML) or map = "County.aprx" (ArcGIS Pro)'
            )
        if self.map_name is not None and self.map is None:
            raise ValueError("map_name needs map = an ArcGIS Pro project (.aprx)")
        for name, lyr in self.layers.items():
            if self.map is None and (lyr.source or lyr.layer or lyr.where):
                raise ValueError(
                    f'[layers."{name}"] source/layer/where map a Pro map\'s layer to its data; '
                    "with a Mapnik style, give the datasource in the style"
                )
            if lyr.source is None and lyr.layer:
                raise ValueError(f'[layers."{name}"] layer needs source = "..."')
        if self.cache.blank_tiles == "store" and self.cache.kind == "xyz":
            raise ValueError(
                'cache.blank_tiles = "store" needs a compact or mbtiles cache: an XYZ folder '
                'would hold one file per blank tile; use "auto" or "skip"'
            )
        return self

    def settings(self) -> RenderSettings:
        r, c = self.render, self.cache
        return RenderSettings(
            metatile=r.metatile,
            buffer=r.buffer,
            fmt=c.format,
            quality=c.quality,
            png_compression=c.png_compression,
        )


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def validation_error(path: Path, exc: ValidationError) -> ConfigError:
    """One line naming the file, the key and the problem."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{path}: {'field ' + repr(where) + ': ' if where else ''}{msg}")


def parse_config(data: dict[str, Any], path: Path) -> ProjectConfig:
    """Validate the parsed TOML of ``path``; :class:`ConfigError` naming the key."""
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(path, exc) from exc


def read_config(path: Path) -> ProjectConfig:
    """Read and validate a ``tiledelta.toml``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return parse_config(data, path)
