"""The per-upstream circuit breaker: failures in a row pause an upstream, one probe at a time tries it again."""

from __future__ import annotations

import pytest
from proxy.upstream.breaker import Breakers, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_pause_the_upstream_until_a_probe_succeeds() -> None:
    clock = Clock()
    breakers = Breakers(threshold=3, cooldown=30, clock=clock)
    for _ in range(2):
        assert breakers.before("r.test") is False
        breakers.failed("r.test", probe=False)
    assert breakers.before("r.test") is False
    breakers.failed("r.test", probe=False)
    with pytest.raises(CircuitOpen) as paused:
        breakers.before("r.test")
    assert paused.value.failures == 3 and paused.value.retry_in == pytest.approx(30)
    assert breakers.before("other.test") is False  # per upstream
    assert breakers.open_circuits() == {"r.test": 3} and breakers.skipped == {"r.test": 1}

    clock.now += 30
    assert breakers.before("r.test") is True  # the probe
    with pytest.raises(CircuitOpen):
        breakers.before("r.test")  # one at a time
    breakers.succeeded("r.test")
    assert breakers.before("r.test") is False and breakers.open_circuits() == {}


def test_a_failed_probe_pauses_again_and_a_cancelled_one_lets_the_next_probe() -> None:
    clock = Clock()
    breakers = Breakers(threshold=1, cooldown=10, clock=clock)
    breakers.failed("r.test", probe=False)
    clock.now += 10
    assert breakers.before("r.test") is True
    breakers.failed("r.test", probe=True)
    with pytest.raises(CircuitOpen):
        breakers.before("r.test")
    clock.now += 10
    assert breakers.before("r.test") is True
    breakers.released("r.test", probe=True)
    assert breakers.before("r.test") is True


def test_a_success_between_failures_starts_the_count_again() -> None:
    breakers = Breakers(threshold=2, cooldown=10, clock=Clock())
    breakers.failed("r.test", probe=False)
    breakers.succeeded("r.test")
    breakers.failed("r.test", probe=False)
    assert breakers.before("r.test") is False


def test_registries_clients_name_cannot_grow_it_without_bound() -> None:
    breakers = Breakers(threshold=1, cooldown=10, clock=Clock(), remembered=3)
    for i in range(10):
        breakers.failed(f"r{i}.test", probe=False)
        with pytest.raises(CircuitOpen):
            breakers.before(f"r{i}.test")
    assert len(breakers.open_circuits()) == 3 and len(breakers.skipped) == 3
