"""The process's file descriptors: the open-file limit raised at start, and accept failures logged sparingly.

When descriptors run out, asyncio logs ``socket.accept() out of system
resource`` at ERROR for every failed accept, up to the listen backlog each
time the socket is polled: hundreds of thousands of lines a minute, which
fill the disk the cache lives on. ``AcceptErrorLog`` logs the first at once
and the rest at most once per interval, with their count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ACCEPT_ERROR", "AcceptErrorLog", "raise_open_file_limit"]

log = logging.getLogger("proxy")

ACCEPT_ERROR = "socket.accept() out of system resource"


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; the soft limit before and after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, hard
    return soft, soft


class AcceptErrorLog:
    """A loop exception handler: accept failures at most once per ``interval``, everything else as asyncio would."""

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0
        self._last_error: BaseException | None = None
        self._flush: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self._last_error = context.get("exception")
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self.interval:
            self._unlogged += 1
            self._emit(now)
            return
        self._unlogged += 1
        if self._flush is None:
            # The count of a burst is logged when its interval ends, even if no failure follows.
            self._flush = loop.call_later(self._logged_at + self.interval - now, self._flushed)

    def _flushed(self) -> None:
        self._flush = None
        if self._unlogged:
            self._emit(self._clock())

    def _emit(self, now: float) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        since = "" if self._logged_at is None else f" {self._unlogged} times in {now - self._logged_at:.0f}s"
        log.error("cannot accept connections%s: %s (open-file limit %d; repeats are logged at most every %gs)",
                  since, self._last_error, resource.getrlimit(resource.RLIMIT_NOFILE)[0], self.interval)
        self._logged_at, self._unlogged = now, 0
