"""Fixtures of the engine and cache tests: the real filesystem cache on tmp_path, and a counting fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from proxy.storage.filesystem import FilesystemStorage

from .engine_fakes import FakeUpstream, ObservedStorage, open_storage
from .s3_fixtures import s3env  # noqa: F401 - a fixture, found here by pytest

NewStorage = Callable[..., Awaitable[FilesystemStorage]]


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[ObservedStorage]:
    async with open_storage(tmp_path) as storage:
        yield storage


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def new_storage(tmp_path: Path) -> AsyncIterator[NewStorage]:
    """Open the cache on tmp_path, as often as a test restarts it; every one opened is closed after."""
    opened: list[FilesystemStorage] = []

    async def new(max_size: int = 1 << 30) -> FilesystemStorage:
        storage = FilesystemStorage(tmp_path, max_size=max_size)
        await storage.start()
        opened.append(storage)
        return storage

    yield new
    for storage in opened:
        await storage.close()
