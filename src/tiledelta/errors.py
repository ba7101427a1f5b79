"""Exception hierarchy. The CLI turns any ``TileDeltaError`` into one line and exit code 1."""


class TileDeltaError(Exception):
    """Base class of every error tiledelta reports to a user."""


class ConfigError(TileDeltaError):
    """The project file (tiledelta.toml) or a command option is invalid."""


class SchemeError(TileDeltaError):
    """A tiling scheme is malformed, unknown, or does not fit the request."""


class StyleError(TileDeltaError):
    """The Mapnik style cannot be loaded or refers to something missing."""


class SourceError(TileDeltaError):
    """A datasource cannot be opened or read."""


class CacheError(TileDeltaError):
    """A tile cache is unreadable, corrupt, or holds a different scheme."""


class LockedError(TileDeltaError):
    """Another tiledelta run holds the project lock."""


class RenderUnavailable(TileDeltaError):
    """Local rendering was asked for, but Mapnik (the ``render`` extra) is not installed."""
