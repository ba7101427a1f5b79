"""Secrets: read from the environment or the project's ``.env``, never printed."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values


class Secret:
    """A string that prints as ``***``."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def env_value(project_root: Path, name: str) -> str | None:
    """``name`` from the environment, else from ``project_root/.env``; None when unset."""
    value = os.environ.get(name)
    if value:
        return value
    env_file = Path(project_root) / ".env"
    if env_file.is_file():
        return dotenv_values(env_file).get(name) or None
    return None
