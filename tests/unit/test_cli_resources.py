"""The accept-error log: the first failure at once, then at most one line per interval with the count."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest
from proxy.cli.resources import ACCEPT_ERROR, AcceptErrorLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def accept_failed() -> dict[str, Any]:
    return {"message": ACCEPT_ERROR, "exception": OSError(errno.EMFILE, "Too many open files")}


def accept_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]


async def test_a_burst_of_accept_failures_is_one_line_then_one_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    loop = asyncio.get_running_loop()
    clock = Clock()
    handler = AcceptErrorLog(10.0, clock=clock)
    for _ in range(1000):
        handler(loop, accept_failed())
    assert len(accept_lines(caplog)) == 1
    assert "Too many open files" in accept_lines(caplog)[0]
    clock.now += 10
    handler(loop, accept_failed())
    lines = accept_lines(caplog)
    assert len(lines) == 2 and "1000 times in 10s" in lines[1]


async def test_the_count_of_a_burst_is_logged_when_its_interval_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    loop = asyncio.get_running_loop()
    clock = Clock()
    handler = AcceptErrorLog(0.05, clock=clock)
    for _ in range(5):
        handler(loop, accept_failed())
    clock.now += 0.05
    flushed = loop.create_future()
    loop.call_later(0.2, flushed.set_result, None)
    await flushed
    lines = accept_lines(caplog)
    assert len(lines) == 2 and "4 times in" in lines[1]


async def test_other_loop_errors_keep_asyncios_handling(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    loop = asyncio.get_running_loop()
    handler = AcceptErrorLog(10.0, clock=Clock())
    for _ in range(3):
        handler(loop, {"message": "Task exception was never retrieved"})
    assert [r.getMessage() for r in caplog.records].count("Task exception was never retrieved") == 3
