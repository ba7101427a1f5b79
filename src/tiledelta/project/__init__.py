"""A project folder: its validated configuration, paths, scheme, style and run lock."""

from tiledelta.config import PROJECT_FILE
from tiledelta.project.lock import project_lock
from tiledelta.project.project import STATE_DIR, Project

__all__ = ["PROJECT_FILE", "STATE_DIR", "Project", "project_lock"]
