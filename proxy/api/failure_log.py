"""Upstream failures in the log: at WARNING, at most one line a window per upstream.

A registry that is down fails every pull. The first failure is logged at
once, with the registry, its endpoint and the reason; failures of the same
upstream within the next ``window`` seconds are only counted, and the next
line logged for it says how many were left out. Upstreams are keyed by the
observer's bounded label, so registries named only by clients share one
budget and cannot flood the log by number.

Reasons are the messages clients get: they name hosts and URLs the operator
configured, never a credential's password or a token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["FAILURE_LOG_WINDOW", "FailureLog"]

FAILURE_LOG_WINDOW = 60.0

log = logging.getLogger("proxy.upstream")


class FailureLog:
    def __init__(self, *, window: float = FAILURE_LOG_WINDOW, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self._window = window
        self._clock = clock
        self._log = logger
        # key -> (when its last line was logged, failures since not logged)
        self._last: dict[str, tuple[float, int]] = {}

    def failed(self, key: str, registry: str, endpoint: str | None, reason: str) -> bool:
        """Log one failure unless ``key`` had a line within the window; True when it was logged."""
        now = self._clock()
        logged_at, left_out = self._last.get(key, (None, 0))
        if logged_at is not None and now - logged_at < self._window:
            self._last[key] = (logged_at, left_out + 1)
            return False
        self._last[key] = (now, 0)
        where = f"upstream {registry}" + (f" at {endpoint}" if endpoint else "")
        more = (f" ({left_out} more {'failure' if left_out == 1 else 'failures'} of {key} since the last line "
                "not logged)") if left_out else ""
        self._log.warning("%s failed: %s%s", where, reason, more)
        return True
