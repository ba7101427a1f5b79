"""Load a style into Mapnik strictly, before any work, so its errors come first."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tiledelta.errors import StyleError
from tiledelta.render._mapnik import mapnik
from tiledelta.style import Style


def validate_style(style: Style) -> None:
    """Load the style into Mapnik strictly; :class:`StyleError` with Mapnik's reason if it fails.

    Catches unknown symbolizer properties, bad colours and missing fonts before any work.
    """
    m = mapnik.Map(256, 256)
    try:
        mapnik.load_map_from_string(m, style.xml_without_datasources, True, str(style.path.parent))
    except Exception as exc:  # Mapnik raises RuntimeError / ValueError with its reason
        reason = " ".join(str(exc).split())
        raise StyleError(f"{style.path}: Mapnik cannot load the style: {reason}") from exc


def mapnik_summary() -> str:
    """Mapnik's version and input plugins, in one line."""
    plugins = sorted(mapnik.DatasourceCache.plugin_names())
    version = mapnik.version_string() if hasattr(mapnik, "version_string") else "?"
    return f"Mapnik {version}; input plugins: {', '.join(plugins) or 'none'}"


def font_faces(style: Style) -> set[str]:
    """The font faces Mapnik knows, with the style's ``font-directory`` registered."""
    try:
        font_dir = ET.parse(style.path).getroot().get("font-directory")
    except ET.ParseError:
        font_dir = None
    if font_dir:
        folder = Path(font_dir).expanduser()
        if not folder.is_absolute():
            folder = style.path.parent / folder
        if folder.is_dir():
            mapnik.FontEngine.register_fonts(str(folder), True)
    return set(mapnik.FontEngine.face_names())
