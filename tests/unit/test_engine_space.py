"""Blobs against the cache's two space limits: ``cache.max_size`` and the disk itself.

Downloads in flight reserve their size under ``cache.max_size``; one that
cannot fit, or that finds the disk full (a real tmpfs here), streams to its
readers uncached and verified, and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy.pullthrough import download as download_module
from proxy.pullthrough.blobs import CHUNK, BlobService, BlobStreamError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.pullthrough.download import WINDOW, Download
from proxy.pullthrough.ports import CacheResult
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind

from ..small_disk import fill, small_disk
from .engine_fakes import WAIT, FakeUpstream, ObservedStorage, Tally, digest_of, files_under, joined, open_storage, piece_bytes
from .test_engine_blobs import Reader, pull

APP = Target("registry-a.test", "team/app")
BLOB = ContentKind.BLOB
LAYER = os.urandom(300_000)
OTHER_LAYER = os.urandom(300_000)


@pytest.fixture
async def budget(tmp_path: Path) -> AsyncIterator[ObservedStorage]:
    """A cache with room for one layer and a half."""
    async with open_storage(tmp_path, max_size=450_000) as storage:
        yield storage


@pytest.fixture
async def tiny_disk(tmp_path: Path) -> AsyncIterator[ObservedStorage]:
    """A cache on a 2 MiB disk, well under its max_size."""
    with small_disk(tmp_path / "disk", "2m") as root:
        async with open_storage(root) as storage:
            yield storage


def service(storage: ObservedStorage, upstream: FakeUpstream) -> BlobService:
    return BlobService(storage=storage, upstream=upstream, clearances=Clearances(ttl=300))


async def pulled(blobs: BlobService, digest: Digest) -> tuple[bool, CacheResult]:
    """Whether a pull got the whole blob, and how; a short answer to compare when it did not."""
    data, result = await pull(blobs, APP, digest)
    return digest_of(data) == digest, result


def leftovers(storage: ObservedStorage) -> list[Path]:
    return files_under(storage.layout.tmp) + files_under(storage.layout.blobs)


async def test_a_blob_larger_than_max_size_streams_uncached_to_every_reader_even_one_that_arrives_at_the_end(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    async with open_storage(tmp_path, max_size=len(LAYER) - 1) as storage:
        blobs = service(storage, upstream)
        digest = upstream.add_blob(LAYER, APP)
        held = upstream.hold(digest)
        entered = Tally()
        readers = [Reader(blobs, APP, digest, entered) for _ in range(3)]
        await entered.reach(3)
        await held.send_all(LAYER, pieces=3)
        # Every byte is in; the verdict, where a cached download commits, is next. The
        # window has moved past the start, so this reader downloads the blob for itself.
        late = Reader(blobs, APP, digest, entered)
        await entered.reach(4)
        held.end()

        assert [await r.finished() for r in [*readers, late]] == [LAYER] * 4
        assert storage.size(BLOB, digest) is None and leftovers(storage) == []
        stats = storage.stats()
        assert (stats.evictions, stats.used, stats.reserved) == (0, 0, 0)
        assert blobs.uncached == 2
        await blobs.aclose()


async def test_a_download_reserves_its_size_and_evicts_to_make_room_before_it_writes(
        budget: ObservedStorage, upstream: FakeUpstream) -> None:
    blobs = service(budget, upstream)
    first = upstream.add_blob(OTHER_LAYER, APP)
    assert await pulled(blobs, first) == (True, CacheResult.MISS)
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    reader = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    await held.send(LAYER[:1000])

    stats = budget.stats()
    assert stats.reserved == len(LAYER)
    assert budget.size(BLOB, first) is None and stats.used + stats.reserved <= stats.max_size

    await held.send(LAYER[1000:])
    held.end()
    assert await reader.finished() == LAYER
    stats = budget.stats()
    assert (stats.used, stats.reserved) == (len(LAYER), 0)
    await blobs.aclose()


async def test_a_download_that_does_not_fit_beside_those_in_flight_streams_uncached(
        budget: ObservedStorage, upstream: FakeUpstream) -> None:
    blobs = service(budget, upstream)
    digests = [upstream.add_blob(data, APP) for data in (LAYER, OTHER_LAYER)]
    helds = [upstream.hold(d) for d in digests]
    entered = Tally()
    readers = [Reader(blobs, APP, d, entered) for d in digests]
    await entered.reach(2)
    for held, data in zip(helds, (LAYER, OTHER_LAYER), strict=True):
        await held.send(data)

    # Both are whole upstream; on disk, only what fits under max_size.
    on_disk = sum(p.stat().st_size for p in leftovers(budget))
    assert on_disk + budget.stats().used <= budget.stats().max_size

    for held in helds:
        held.end()
    assert [await r.finished() for r in readers] == [LAYER, OTHER_LAYER]
    assert [budget.size(BLOB, d) for d in digests] == [len(LAYER), None]
    assert files_under(budget.layout.tmp) == [] and budget.stats().reserved == 0
    assert blobs.uncached == 1
    await blobs.aclose()


async def test_an_uncached_download_runs_at_most_a_window_ahead_of_its_slowest_reader(
        budget: ObservedStorage, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "WINDOW", 50_000)
    blobs = service(budget, upstream)
    data = os.urandom(500_000)  # larger than max_size: uncached
    digest = upstream.add_blob(data, APP)
    held = upstream.hold(digest)
    for start in range(0, len(data), 20_000):  # all of it on offer at once
        held._queue.put_nowait(data[start:start + 20_000])
    held.end()
    async with blobs.open(APP, digest, env="default") as body:
        entered = Tally()
        fast = Reader(blobs, APP, digest, entered)
        await entered.reach(1)
        await fast.got.reach(60_000 - 1)
        # Three chunks in, the download waits for the reader that has not read yet.
        assert held.asked.value == 3
        assert await joined(body.read()) == data
    assert await fast.finished() == data
    await blobs.aclose()


async def test_a_disk_that_fills_mid_blob_streams_the_rest_uncached_and_verified(
        tiny_disk: ObservedStorage, upstream: FakeUpstream) -> None:
    blobs = service(tiny_disk, upstream)
    data = os.urandom(5 * 1024 * 1024)
    digest = upstream.add_blob(data, APP)
    held = upstream.hold(digest)
    entered = Tally()
    readers = [Reader(blobs, APP, digest, entered) for _ in range(3)]
    await entered.reach(3)
    await held.send_all(data, pieces=10)
    held.end()

    assert [await r.finished() for r in readers] == [data] * 3
    assert tiny_disk.stats().disk_full >= 1 and blobs.uncached == 1
    assert leftovers(tiny_disk) == [] and tiny_disk.stats().reserved == 0


async def test_a_wrong_body_on_a_full_disk_streams_uncached_up_to_its_last_byte_and_is_cut_there(
        tiny_disk: ObservedStorage, upstream: FakeUpstream) -> None:
    blobs = service(tiny_disk, upstream)
    digest = upstream.add_blob(LAYER, APP)
    upstream.corrupt.add(digest)
    filler = fill(tiny_disk.layout.root)
    try:
        reader = Reader(blobs, APP, digest, Tally())
        with pytest.raises(BlobStreamError):
            await reader.finished()
    finally:
        filler.unlink()
    assert len(reader.received) == len(LAYER) - 1
    assert leftovers(tiny_disk) == []
    await blobs.aclose()


async def test_caching_resumes_once_the_full_disk_has_room_again(
        tiny_disk: ObservedStorage, upstream: FakeUpstream) -> None:
    blobs = service(tiny_disk, upstream)
    digest = upstream.add_blob(LAYER, APP)
    filler = fill(tiny_disk.layout.root)

    assert await pulled(blobs, digest) == (True, CacheResult.MISS)
    assert tiny_disk.size(BLOB, digest) is None and leftovers(tiny_disk) == []
    assert tiny_disk.stats().disk_full >= 1

    filler.unlink()
    assert await pulled(blobs, digest) == (True, CacheResult.MISS)
    assert await pulled(blobs, digest) == (True, CacheResult.HIT)
    assert files_under(tiny_disk.layout.tmp) == []
    await blobs.aclose()


def uncached_download() -> Download:
    download = Download(Target("r.test", "a/b"), Caller("default", ""))
    download.begin(None, None, hashlib.sha256(), lambda why: None)
    return download


async def test_a_range_reader_ahead_of_an_uncached_download_gets_its_own_bytes() -> None:
    download = uncached_download()
    data = bytes(range(256)) * (4 * CHUNK // 256)
    start = 3 * CHUNK + 7
    download.hold()
    download.hold()
    whole, ranged = download.tail(0, None), download.tail(start, None)
    first = asyncio.ensure_future(ranged.__anext__())  # starts, and waits for its bytes, before the other reads
    first_of_whole = asyncio.ensure_future(whole.__anext__())
    await download.receive(data[:CHUNK])
    await first_of_whole
    assert len(download._positions) == 2
    await whole.aclose()  # the whole-body reader hangs up; the range reader is all that is left
    download.release()
    for i in range(1, 4):
        await download.receive(data[i * CHUNK:(i + 1) * CHUNK])
    await download.received_all()
    download.finish()
    piece = await asyncio.wait_for(first, WAIT)
    chunk = await piece_bytes(piece)
    assert chunk == data[start:start + len(chunk)]


async def test_a_range_reader_far_ahead_of_an_uncached_download_does_not_stall_it() -> None:
    download = uncached_download()
    download.hold()
    ranged = download.tail(WINDOW + 3 * CHUNK, None)
    first = asyncio.ensure_future(ranged.__anext__())
    held = 0

    async def receive() -> None:
        nonlocal held
        # Past the window, up to the range's first bytes: nothing before them is kept for anyone.
        for _ in range(WINDOW // CHUNK + 4):
            await download.receive(b"x" * CHUNK)
            held = max(held, download.received - download._memory_start)
        await download.received_all()
        download.finish()

    await asyncio.wait_for(asyncio.gather(receive(), first), WAIT)
    assert held <= WINDOW + CHUNK
