"""Share one in-flight computation among concurrent callers with the same key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """The work runs in its own task, so a caller that goes away (a client
    disconnecting) cancels only its own wait, never the shared work."""

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}
        self.joins = 0

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._calls[key] = task
            task.add_done_callback(lambda _: self._calls.pop(key, None))
        else:
            self.joins += 1
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel the work in flight and wait until it has stopped."""
        tasks = list(self._calls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
