"""Runs: the lifecycle every command shares, run folders, typed summaries, reports and
notifications."""

from tiledelta.runs.lifecycle import run
from tiledelta.runs.summary import LevelSummary, RunSummary

__all__ = ["LevelSummary", "RunSummary", "run"]
