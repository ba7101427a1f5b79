"""The project: ``tiledelta.toml`` in a folder, and everything derived from it.

Relative paths in the file resolve against the project folder. :meth:`Project.load`
validates the whole configuration once (see :mod:`tiledelta.config`) and the rules
that need the tiling scheme (the levels), so every command fails alike, with one line
naming the key, before any work. The style is parsed when first asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from tiledelta.config import (
    PROJECT_FILE,
    ProjectConfig,
    RenderSettings,
    parse_config,
    read_config,
)
from tiledelta.errors import ConfigError, SchemeError
from tiledelta.grid import (
    Bounds,
    TilingScheme,
    load_scheme,
    mapnik_scale_denominator,
    select_levels,
    up_to_level,
)
from tiledelta.style import Style, load_pro_map, load_style

STATE_DIR = ".tiledelta"


class Project:
    """A loaded project folder with a validated, frozen configuration."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = Path(root).resolve()
        self.config = config
        self._style: Style | None = None
        self._scheme: TilingScheme | None = None
        self._levels: list[int] | None = None

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path | str = ".") -> Project:
        """Read and validate ``root/tiledelta.toml`` (scheme and levels included)."""
        root = Path(root)
        path = root / PROJECT_FILE
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{root}: not a folder; pass the project folder with --project")
        if not path.is_file():
            raise ConfigError(
                f"{path}: no project file; run 'tiledelta init {root}' first or pass --project"
            )
        project = cls(root, read_config(path))
        project.check()
        return project

    def check(self) -> None:
        """The rules that need the scheme: it loads, and it has the configured levels."""
        path = self.root / PROJECT_FILE
        try:
            self.scheme  # noqa: B018
        except SchemeError as exc:
            raise ConfigError(f"{path}: field 'scheme': {exc}") from None
        try:
            self.levels  # noqa: B018
        except SchemeError as exc:
            raise ConfigError(f"{path}: field 'levels': {exc}") from None

    def updated(self, **changes: Any) -> Project:
        """A new project with some keys changed, validated like a loaded one.

        Keys are top-level names; a section may be given as a dict of its keys to change
        (``updated(render={"processes": 1})``).
        """
        data = self.config.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "layers":
                data[key] = {**data[key], **value}
            elif hasattr(value, "model_dump"):
                data[key] = value.model_dump()
            elif key == "layers" and isinstance(value, dict):
                data[key] = {
                    k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()
                }
            else:
                data[key] = value
        project = Project(self.root, parse_config(data, self.root / PROJECT_FILE))
        project.check()
        return project

    def save(self) -> Path:
        """Write the configuration to ``tiledelta.toml`` (atomically)."""
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
            cfg = self.config
            if cfg.map is not None:
                self._style = load_pro_map(
                    self.resolve(cfg.map),
                    cfg.map_name,
                    cfg.layers,
                    project_root=self.root,
                    scale_factor=self._arcgis_scale_factor(),
                )
            else:
                self._style = load_style(self.resolve(str(cfg.style)))
        return self._style

    def _arcgis_scale_factor(self) -> float:
        """Mapnik's scale denominator per ArcGIS scale in this scheme (0.945 in metres,
        3.1 in US feet): a Pro map's scale ranges are ArcGIS scales."""
        scheme = self.scheme
        level = scheme.levels[0]
        scale = scheme.lod(level).scale
        if not scale or scale <= 0:
            return 1 / (39.37 * 96 * 0.00028)
        return mapnik_scale_denominator(scheme, level) / scale

    @property
    def style_file(self) -> Path:
        """The file the style comes from: the Mapnik XML, or the Pro map."""
        return self.resolve(str(self.config.map or self.config.style))

    @property
    def scheme(self) -> TilingScheme:
        if self._scheme is None:
            self._scheme = load_scheme(self.config.scheme, self.root)
        return self._scheme

    @property
    def levels(self) -> list[int]:
        if self._levels is None:
            self._levels = select_levels(self.scheme, self.config.levels)
        return list(self._levels)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.config.cache.path)

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def extent(self) -> Bounds | None:
        e = self.config.render.extent
        return Bounds(*e) if e else None

    @property
    def settings(self) -> RenderSettings:
        return self.config.settings()

    def key_field(self, layer: str) -> str | None:
        cfg = self.config.layers.get(layer)
        return cfg.key if cfg else None

    @property
    def cache_scheme(self) -> TilingScheme:
        """The scheme as the cache lists it: LODs up to the highest configured level."""
        return up_to_level(self.scheme, max(self.levels))
