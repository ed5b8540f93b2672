"""Fixtures of the engine tests: the real filesystem cache on tmp_path, and a counting fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .engine_fakes import FakeUpstream, ObservedStorage, open_storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[ObservedStorage]:
    async with open_storage(tmp_path) as storage:
        yield storage


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()
