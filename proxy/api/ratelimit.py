"""Failed logins, counted per source address: past the limit, that address waits.

While an address is over the limit even a correct key is refused, or
guessing would go on. IPv6 clients are counted by /64, the block one host
usually holds, so rotating through its addresses buys nothing. Memory is
bounded: the least recently failing addresses are forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    def __init__(self, *, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 remembered: int = 10_000) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._remembered = remembered
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._recent(_counted_as(address))
        if failures is None or len(failures) < self._limit:
            return 0.0
        return max(0.0, failures[0] + self._window - self._clock())

    def failed(self, address: str) -> None:
        address = _counted_as(address)
        failures = self._recent(address) or deque(maxlen=self._limit)
        failures.append(self._clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > self._remembered:
            self._failures.popitem(last=False)

    def forgive(self, address: str) -> None:
        """Take back the latest failure: an attempt counted before its outcome was known, and it succeeded."""
        failures = self._failures.get(_counted_as(address))
        if failures:
            failures.pop()

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        cutoff = self._clock() - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures


def _counted_as(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
