"""SingleFlight: one run of the work per key in flight, shared by every caller, whatever each caller does."""

from __future__ import annotations

import asyncio

import pytest
from proxy.singleflight import SingleFlight


class Work:
    """Work that waits for `release` and counts how often it started and finished."""

    def __init__(self, result: str = "done", error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.started = 0
        self.finished = 0
        self.running = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.started += 1
        self.running.set()
        await self.release.wait()
        self.finished += 1
        if self.error is not None:
            raise self.error
        return self.result


# The callers start in the order they were created and the work after the
# first of them, so once the work runs every caller created before it is attached.


async def test_concurrent_callers_with_one_key_share_one_run() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work("manifest")
    callers = [asyncio.ensure_future(flight.do("key", work)) for _ in range(20)]
    await work.running.wait()
    assert len(flight) == 1 and flight.joins == 19
    work.release.set()
    assert await asyncio.gather(*callers) == ["manifest"] * 20
    assert (work.started, work.finished, flight.joins) == (1, 1, 19)


async def test_other_keys_run_their_own_work() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    first, second = Work("a"), Work("b")
    callers = [asyncio.ensure_future(flight.do("a", first)), asyncio.ensure_future(flight.do("b", second))]
    await first.running.wait()
    await second.running.wait()
    assert len(flight) == 2 and flight.joins == 0
    first.release.set()
    second.release.set()
    assert await asyncio.gather(*callers) == ["a", "b"]


async def test_a_cancelled_caller_does_not_cancel_the_work_for_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work("blob")
    leaving = asyncio.ensure_future(flight.do("key", work))
    staying = [asyncio.ensure_future(flight.do("key", work)) for _ in range(3)]
    await work.running.wait()
    assert flight.joins == 3
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    work.release.set()
    assert await asyncio.gather(*staying) == ["blob"] * 3
    assert (work.started, work.finished) == (1, 1)


async def test_the_work_completes_when_every_caller_went_away() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    work = Work()
    caller = asyncio.ensure_future(flight.do("key", work))
    await work.running.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert len(flight) == 1  # still running, so a new caller would join it
    joined = asyncio.ensure_future(flight.do("key", work))
    work.release.set()  # the new caller attaches before the work resumes
    assert await joined == "done"
    assert (work.started, work.finished, flight.joins) == (1, 1, 1)


async def test_an_exception_reaches_every_caller() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    failure = ConnectionError("upstream went away")
    work = Work(error=failure)
    callers = [asyncio.ensure_future(flight.do("key", work)) for _ in range(5)]
    await work.running.wait()
    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert outcomes == [failure] * 5
    assert work.started == 1


@pytest.mark.parametrize("error", [None, ValueError("bad digest")])
async def test_the_key_is_free_again_afterwards(error: Exception | None) -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    first = Work("first", error)
    first.release.set()
    try:
        await flight.do("key", first)
    except ValueError:
        pass
    assert len(flight) == 0
    second = Work("second")
    second.release.set()
    assert await flight.do("key", second) == "second"
    assert (first.started, second.started, flight.joins) == (1, 1, 0)
    assert len(flight) == 0
