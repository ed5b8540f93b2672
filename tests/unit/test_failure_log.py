"""Upstream failures are logged at WARNING with registry, endpoint and reason, at most once a window per upstream."""

from __future__ import annotations

import logging

import pytest
from proxy.api.failure_log import FailureLog
from proxy.api.observer import Observer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_first_failure_is_logged_at_once_the_rest_of_the_window_only_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(window=60, clock=clock)
    caplog.set_level(logging.WARNING)
    assert failures.failed("ghcr.io", "ghcr.io", "https://ghcr.example:8443", "registry ghcr.io is unreachable")
    for _ in range(4):
        clock.now += 10
        assert not failures.failed("ghcr.io", "ghcr.io", "https://ghcr.example:8443", "registry ghcr.io is unreachable")
    assert lines(caplog) == ["upstream ghcr.io at https://ghcr.example:8443 failed: registry ghcr.io is unreachable"]

    clock.now += 20  # 60 s after the first line
    assert failures.failed("ghcr.io", "ghcr.io", "https://ghcr.example:8443", "upstream ghcr.io answered HTTP 502")
    assert lines(caplog)[1] == ("upstream ghcr.io at https://ghcr.example:8443 failed: upstream ghcr.io answered "
                                "HTTP 502 (4 more failures of ghcr.io since the last line not logged)")
    clock.now += 60
    assert failures.failed("ghcr.io", "ghcr.io", None, "timed out")
    assert lines(caplog)[2] == "upstream ghcr.io failed: timed out"


def test_each_upstream_has_its_own_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(window=60, clock=clock)
    caplog.set_level(logging.WARNING)
    assert failures.failed("quay.io", "quay.io", "https://quay.io", "down")
    assert failures.failed("ghcr.io", "ghcr.io", "https://ghcr.io", "down")
    assert not failures.failed("quay.io", "quay.io", "https://quay.io", "down")
    assert len(lines(caplog)) == 2


def test_registries_named_only_by_clients_share_one_window(caplog: pytest.LogCaptureFixture) -> None:
    """Clients can name any number of registries; they cannot make the log say more than one line a window."""
    clock = Clock()
    observer = Observer(lambda: {"quay.io"}, failure_log=FailureLog(window=60, clock=clock))
    caplog.set_level(logging.WARNING)
    for i in range(50):
        observer.upstream_failed(f"r{i}.example", f"registry r{i}.example is unreachable",
                                 endpoint=f"https://r{i}.example")
    observer.upstream_failed("quay.io", "upstream quay.io answered HTTP 503", endpoint="https://quay.io")
    assert lines(caplog) == ["upstream r0.example at https://r0.example failed: registry r0.example is unreachable",
                             "upstream quay.io at https://quay.io failed: upstream quay.io answered HTTP 503"]
    clock.now += 61
    observer.upstream_failed("r50.example", "unreachable", endpoint="https://r50.example")
    assert lines(caplog)[-1].endswith("(49 more failures of other since the last line not logged)")


def test_a_block_by_policy_is_no_failure_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    observer = Observer(lambda: {"quay.io"})
    caplog.set_level(logging.WARNING)
    observer.upstream_blocked("quay.io", "registry.whitelist", "registry quay.io is not in registry.whitelist")
    state = observer.upstreams["quay.io"]
    assert state.blocked is not None and state.blocked[1] == "registry.whitelist"
    assert state.last_failure is None and not state.errors
    assert lines(caplog) == []
