"""A tiles-per-second cap for shared machines (``[render] max_tiles_per_second``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tiledelta.errors import ConfigError


class Throttle:
    """Keep a job under ``rate`` tiles per second by sleeping.

    ``wait(n)`` counts ``n`` more tiles and sleeps until the average since the first
    call is at most ``rate``. Call it with each chunk's tile count before the chunk is
    handed to a worker (the render pool's task feed, ``[render] max_tiles_per_second``), or
    after each chunk is done (:meth:`progress`, a ``progress(done, total)`` callback for
    ``update``/``seed``; that paces rendering itself only with one render process,
    since pool workers work ahead of the parent).
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ConfigError(f"--max-tiles-per-second {rate}: must be more than zero")
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self.start: float | None = None
        self.tiles = 0
        self.slept = 0.0

    def wait(self, n: int) -> None:
        now = self._clock()
        if self.start is None:
            self.start = now
        self.tiles += n
        delay = self.start + self.tiles / self.rate - now
        if delay > 0:
            self._sleep(delay)
            self.slept += delay

    __call__ = wait

    def progress(
        self, inner: Callable[[int, int], None] | None = None
    ) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback that throttles, then calls ``inner``."""
        last = 0

        def cb(done: int, total: int) -> None:
            nonlocal last
            if done > last:
                self.wait(done - last)
                last = done
            if inner:
                inner(done, total)

        return cb
