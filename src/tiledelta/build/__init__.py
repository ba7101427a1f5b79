"""Builds: the full seed, the incremental update, and what they share with the lifecycle.

Builds read, detect, plan and write; :mod:`tiledelta.runs.lifecycle` wraps each one in
the lock, journal, snapshot record, run folder, report and notifications.
"""

from tiledelta.build.context import BuildOutcome, RunContext
from tiledelta.build.seed import build_full
from tiledelta.build.update import build_update

__all__ = ["BuildOutcome", "RunContext", "build_full", "build_update"]
