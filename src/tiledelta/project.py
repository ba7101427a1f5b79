"""The project: ``tiledelta.toml`` in a folder, and everything derived from it.

Relative paths in the file resolve against the project folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiledelta.errors import ConfigError
from tiledelta.grid import Bounds, TilingScheme
from tiledelta.notify import NotifyConfig
from tiledelta.render import RenderSettings
from tiledelta.style import Style, load_style

PROJECT_FILE = "tiledelta.toml"
STATE_DIR = ".tiledelta"


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["compact", "mbtiles", "xyz"] = "compact"
    path: str = "cache"
    format: Literal["png", "png8", "jpeg", "mixed"] = "png"
    quality: int = Field(75, ge=1, le=100)
    #: "store": keep background-only tiles too (over [render] extent), one copy per bundle
    blank_tiles: Literal["skip", "store"] = "skip"


class RenderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metatile: int = Field(4, ge=1, le=16)
    buffer: int = Field(64, ge=0, le=1024)
    processes: int = Field(0, ge=0, description="0 = all cores")
    max_tiles_per_second: float | None = Field(
        None, gt=0, description="cap on the render rate, for shared machines"
    )
    extent: tuple[float, float, float, float] | None = None


class LayerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None


class ArcGISConfig(BaseModel):
    """``[arcgis]``: the cached map service tiledelta updates on ArcGIS Server."""

    model_config = ConfigDict(extra="forbid")

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
    cache_task: str = "System/CachingControllers/GPServer/Manage Map Cache Tiles"
    sd: str | None = None  # a staged .sd to upload when arcpy is not available
    aprx: str | None = None  # ArcGIS Pro project, for publishing with arcpy
    map: str | None = None  # map name inside the .aprx
    item_id: str | None = None  # portal item for the thumbnail / tile package / run summaries
    describe_runs: bool = False  # append each publish's run summary to the item description


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: str
    scheme: str = "web-mercator"
    levels: str = "0-19"
    cache: CacheConfig = CacheConfig()
    render: RenderConfig = RenderConfig()
    layers: dict[str, LayerConfig] = {}
    arcgis: ArcGISConfig | None = None
    notify: NotifyConfig | None = None


class Project:
    """A loaded project folder."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = root.resolve()
        self.config = config
        self._style: Style | None = None
        self._scheme: TilingScheme | None = None

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str = ".") -> Project:
        root = Path(root)
        path = root / PROJECT_FILE
        if not path.is_file():
            raise ConfigError(
                f"{path}: no project file; run 'tiledelta init {root}' first or pass --project"
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        try:
            config = ProjectConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{path}: field '{where}': {err['msg']}") from exc
        return cls(root, config)

    def save(self) -> Path:
        path = self.root / PROJECT_FILE
        data = self.config.model_dump(exclude_none=True)
        tmp = path.with_suffix(".toml.tmp")
        tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
        tmp.replace(path)
        return path

    # -- derived -----------------------------------------------------------------------------
    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def style(self) -> Style:
        if self._style is None:
            self._style = load_style(self.resolve(self.config.style))
        return self._style

    @property
    def scheme(self) -> TilingScheme:
        if self._scheme is None:
            from tiledelta.schemes import load_scheme

            self._scheme = load_scheme(self.config.scheme, self.root)
        return self._scheme

    @property
    def levels(self) -> list[int]:
        from tiledelta.schemes import select_levels

        return select_levels(self.scheme, self.config.levels)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.config.cache.path)

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def check(self) -> None:
        """Cross-field rules the field types cannot express."""
        if self.config.cache.blank_tiles == "store" and self.config.render.extent is None:
            raise ConfigError(
                f'{self.root / PROJECT_FILE}: cache.blank_tiles = "store" needs '
                "render.extent (the area whose blank tiles are stored)"
            )

    @property
    def extent(self) -> Bounds | None:
        e = self.config.render.extent
        return Bounds(*e) if e else None

    @property
    def settings(self) -> RenderSettings:
        r, c = self.config.render, self.config.cache
        return RenderSettings(metatile=r.metatile, buffer=r.buffer, fmt=c.format, quality=c.quality)

    def key_field(self, layer: str) -> str | None:
        cfg = self.config.layers.get(layer)
        return cfg.key if cfg else None

    def open_store(self, create: bool = True, max_level: int | None = None):
        """The project's cache; ``max_level`` lists LODs beyond the configured ones
        (to remove tiles of levels that were dropped from the project)."""
        from tiledelta.grid import up_to_level
        from tiledelta.stores import open_store

        c = self.config.cache
        scheme = self.cache_scheme if max_level is None else up_to_level(self.scheme, max_level)
        return open_store(
            c.kind,
            self.cache_path,
            scheme,
            fmt=c.format,
            quality=c.quality,
            create=create,
        )

    @property
    def cache_scheme(self) -> TilingScheme:
        """The scheme as the cache lists it: LODs up to the highest configured level."""
        from tiledelta.grid import up_to_level

        return up_to_level(self.scheme, max(self.levels))
