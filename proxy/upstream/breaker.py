"""A circuit breaker per upstream: an upstream that keeps failing is not asked again for a while.

A black-holed upstream (it accepts TCP and never answers) costs every
request a full timeout. After ``threshold`` failures in a row (connection
errors and timeouts, not 4xx or 5xx answers: those are quick) the circuit
opens and requests fail at once for ``cooldown``, so cached tags are served
stale without waiting. Then one request at a time is let through as a
probe; its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Breakers", "CircuitOpen"]

T = TypeVar("T")


class CircuitOpen(Exception):
    """The upstream failed too often lately; ``retry_in`` seconds until it is tried again."""

    def __init__(self, failures: int, retry_in: float) -> None:
        super().__init__(f"{failures} failures in a row; tried again in {max(retry_in, 0.0):.0f} s")
        self.failures = failures
        self.retry_in = retry_in


@dataclass
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    def __init__(self, *, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, remembered: int = 10_000) -> None:
        self._threshold = threshold
        self._remembered = remembered
        self._cooldown = cooldown
        self._clock = clock
        # Keyed by registry. Clients can name any registry, so both maps are
        # bounded: the oldest entries go first, and a recovery removes one.
        self._circuits: dict[str, _Circuit] = {}
        # Requests answered at once because the circuit was open, by registry.
        self.skipped: dict[str, int] = {}

    def before(self, registry: str) -> bool:
        """Raises CircuitOpen while the upstream is left alone; True when this request is the probe."""
        circuit = self._circuits.get(registry)
        if circuit is None or circuit.failures < self._threshold:
            return False
        now = self._clock()
        if now < circuit.open_until or circuit.probing:
            count = self.skipped.pop(registry, 0) + 1
            _bounded(self.skipped, self._remembered)[registry] = count
            raise CircuitOpen(circuit.failures, circuit.open_until - now)
        circuit.probing = True
        return True

    def succeeded(self, registry: str) -> None:
        self._circuits.pop(registry, None)

    def failed(self, registry: str, *, probe: bool) -> None:
        circuit = self._circuits.pop(registry, None) or _Circuit()
        _bounded(self._circuits, self._remembered)[registry] = circuit
        circuit.failures += 1
        if probe or circuit.failures >= self._threshold:
            circuit.probing = False
            circuit.open_until = self._clock() + self._cooldown

    def released(self, registry: str, *, probe: bool) -> None:
        """A probe that ended without an answer either way (cancelled): the next request probes."""
        circuit = self._circuits.get(registry)
        if probe and circuit is not None:
            circuit.probing = False

    def open_circuits(self) -> dict[str, int]:
        """Registries whose circuit is open now, with their failures in a row."""
        now = self._clock()
        return {registry: c.failures for registry, c in self._circuits.items()
                if c.failures >= self._threshold and (now < c.open_until or c.probing)}


def _bounded(entries: dict[str, T], limit: int) -> dict[str, T]:
    """``entries``, with room for one more: the oldest goes when it is full."""
    while len(entries) >= limit:
        del entries[next(iter(entries))]
    return entries
