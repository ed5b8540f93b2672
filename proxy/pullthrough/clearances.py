"""Who may read which repository, as the upstream last said, remembered for a while.

Cached content is shared between environments, and so between upstream
identities: a blob one environment's credential fetched is stored once.
Whether another environment may be served it is the upstream's to decide,
per repository: a 2xx answer to that environment's request (a manifest or
blob HEAD or GET, made with its credential or none) clears its access for
the repository, for ``ttl`` (the tag TTL). After that the upstream is asked
again, so a revoked grant upstream or a deactivated credential here stops
serving within one TTL, and at once in the second case, since the access
itself changes.

Keyed by access (credential id, or "" for anonymous) rather than by
environment: two environments with the same access are the same upstream
identity, and the upstream's answer holds for both.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from proxy.errors import RegistryError
from proxy.reference import Target

__all__ = ["Caller", "Clearances"]


@dataclass(frozen=True)
class Caller:
    """Who a pull is for: the client's environment, and the access its requests upstream have."""

    environment: str
    access: str


class Clearances:
    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic, remembered: int = 100_000,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._ttl = ttl
        self._clock = clock
        self._remembered = remembered
        self._on_refused = on_refused
        self._seen: OrderedDict[tuple[str, Target], float] = OrderedDict()

    def record(self, caller: Caller, target: Target) -> None:
        key = (caller.access, target)
        self._seen[key] = self._clock()
        self._seen.move_to_end(key)
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)

    def fresh(self, caller: Caller, target: Target) -> bool:
        return self.seen_within(caller, target, self._ttl)

    def seen_within(self, caller: Caller, target: Target, age: float) -> bool:
        seen = self._seen.get((caller.access, target))
        return seen is not None and self._clock() - seen < age

    def check_failed(self, caller: Caller, err: RegistryError) -> None:
        """A check of cached content failed; a refusal (not an outage) is counted for the caller's environment."""
        if err.status in (401, 403, 404) and self._on_refused is not None:
            self._on_refused(caller.environment)
