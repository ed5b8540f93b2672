"""Two engines sharing one cache, as replicas share a bucket: one downloads a blob, the other waits for it.

The claim to download is the storage's (an advisory lock across replicas);
here it is a set both engines' storage sees, so every ordering is decided
by the test. The engine that loses the claim makes no GET of its own: it
serves the blob once committed, or downloads it itself when the winner's
download ends without it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy.pullthrough.blobs import BlobService
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.ports import CacheResult
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind

from .engine_fakes import FakeUpstream, ObservedStorage, Tally, blob_call
from .test_engine_blobs import LAYER, Reader

APP = Target("registry-a.test", "team/app")


class _Claim:
    def __init__(self, storage: SharedFillStorage, digest: Digest) -> None:
        self._storage, self._digest = storage, digest

    async def release(self) -> None:
        self._storage.claimed.discard(self._digest)
        self._storage.released.set()


class SharedFillStorage(ObservedStorage):
    """The filesystem cache with the claims of a shared one: one claim per digest, whoever asks."""

    def __init__(self, data_dir: Path, *, max_size: int) -> None:
        super().__init__(data_dir, max_size=max_size)
        self.claimed: set[Digest] = set()
        self.released = asyncio.Event()
        self.waiting = Tally()

    async def claim_fill(self, digest: Digest) -> _Claim | None:
        if digest in self.claimed:
            return None
        self.claimed.add(digest)
        return _Claim(self, digest)

    async def wait_fill(self, digest: Digest) -> None:
        self.released.clear()
        self.waiting.add()
        await self.released.wait()


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[SharedFillStorage]:
    storage = SharedFillStorage(tmp_path, max_size=1 << 30)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def engines(shared: SharedFillStorage, upstream: FakeUpstream) -> AsyncIterator[tuple[BlobService, BlobService]]:
    first = BlobService(storage=shared, upstream=upstream, clearances=Clearances(ttl=300))
    second = BlobService(storage=shared, upstream=upstream, clearances=Clearances(ttl=300))
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_the_engine_that_loses_the_claim_serves_the_committed_blob_without_a_get(
        engines: tuple[BlobService, BlobService], shared: SharedFillStorage, upstream: FakeUpstream) -> None:
    first, second = engines
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered_first, entered_second = Tally(), Tally()
    filling = [Reader(first, APP, digest, entered_first) for _ in range(5)]
    await entered_first.reach(5)
    waiting = [Reader(second, APP, digest, entered_second) for _ in range(5)]
    await shared.waiting.reach(1)

    await held.send_all(LAYER, pieces=3)
    held.end()

    assert [await r.finished() for r in filling + waiting] == [LAYER] * 10
    assert Counter(r.result for r in waiting) == Counter({CacheResult.HIT: 5})
    # One GET in all; the waiting engine asks once whether its repository may read the blob.
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1, blob_call("HEAD", APP, digest): 1})
    assert second.waits == 1 and not shared.claimed


async def test_when_the_winner_ends_without_the_blob_the_waiting_engine_downloads_it(
        engines: tuple[BlobService, BlobService], shared: SharedFillStorage, upstream: FakeUpstream) -> None:
    first, second = engines
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered_first, entered_second = Tally(), Tally()
    doomed = Reader(first, APP, digest, entered_first)
    await entered_first.reach(1)
    waiting = Reader(second, APP, digest, entered_second)
    await shared.waiting.reach(1)

    await held.send(LAYER[:1000])
    held.end()  # short of the declared size: the download fails and keeps nothing

    with pytest.raises(Exception):  # noqa: B017 - the first client's connection is cut, however it is worded
        await doomed.finished()
    assert await waiting.finished() == LAYER
    assert waiting.result == CacheResult.MISS
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 2})
    assert shared.size(ContentKind.BLOB, digest) == len(LAYER) and not shared.claimed

