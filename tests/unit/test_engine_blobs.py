"""BlobService against a counting fake upstream and the real filesystem cache.

What a pull costs upstream is counted exactly: nothing when warm, one GET per
digest however many clients and repositories ask, one HEAD for each other
repository or access that follows along. Downloads the tests must pause are
held and fed chunk by chunk, so every ordering here is decided by events.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator
from operator import attrgetter
from pathlib import Path

import pytest
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.blobs import BlobService, BlobStreamError
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.ports import CacheResult
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind

from .engine_fakes import WAIT, FakeUpstream, ObservedStorage, Tally, blob_call, files_under, flipped, joined, piece_bytes

APP = Target("registry-a.test", "team/app")
MIRROR = Target("registry-a.test", "mirror/app")
OTHER_REGISTRY = Target("registry-b.test", "team/app")
PRIVATE = Target("registry-a.test", "private/app")
BLOB = ContentKind.BLOB
ENV = "default"

# Under one engine chunk (1 MiB) keeps the tests fast; the tests still send it upstream in several pieces.
LAYER = os.urandom(300_000)


@pytest.fixture
async def blobs(storage: ObservedStorage, upstream: FakeUpstream) -> AsyncIterator[BlobService]:
    service = BlobService(storage=storage, upstream=upstream, clearances=Clearances(ttl=300))
    yield service
    await service.aclose()


async def pull(blobs: BlobService, target: Target, digest: Digest) -> tuple[bytes, CacheResult]:
    async with blobs.open(target, digest, env=ENV) as body:
        return await joined(body.read()), body.result


class Reader:
    """A client pulling in its own task; ``entered`` counts the readers whose body was opened."""

    def __init__(self, blobs: BlobService, target: Target, digest: Digest, entered: Tally,
                 byte_range: tuple[int, int | None] = (0, None)) -> None:
        self.received = bytearray()
        self.got = Tally()
        self.result: CacheResult | None = None
        self._task = asyncio.ensure_future(self._run(blobs, target, digest, entered, byte_range))

    async def _run(self, blobs: BlobService, target: Target, digest: Digest, entered: Tally,
                   byte_range: tuple[int, int | None]) -> bytes:
        async with blobs.open(target, digest, env=ENV) as body:
            self.result = body.result
            entered.add()
            async for piece in body.read(*byte_range):
                chunk = await piece_bytes(piece)
                self.received += chunk
                self.got.add(len(chunk))
        return bytes(self.received)

    async def finished(self) -> bytes:
        return await asyncio.wait_for(self._task, WAIT)


def temp_files(storage: ObservedStorage) -> list[Path]:
    return files_under(storage.layout.tmp)


async def test_a_warm_blob_makes_no_upstream_call(blobs: BlobService, upstream: FakeUpstream) -> None:
    digest = upstream.add_blob(LAYER, APP)
    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.MISS)
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1})
    upstream.reset()

    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.HIT)
    assert await blobs.stat(APP, digest, env=ENV) == (len(LAYER), CacheResult.HIT)
    async with blobs.open(APP, digest, env=ENV) as body:
        assert await joined(body.read(1000, 2000)) == LAYER[1000:2000]
    assert upstream.calls == Counter()


async def test_twenty_concurrent_cold_opens_make_one_get_and_all_read_the_whole_blob(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    readers = [Reader(blobs, APP, digest, entered) for _ in range(20)]
    await entered.reach(20)
    assert blobs.in_flight == 1

    await held.send_all(LAYER, pieces=3)
    held.end()

    assert [await r.finished() for r in readers] == [LAYER] * 20
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1})
    assert Counter(r.result for r in readers) == Counter({CacheResult.MISS: 1, CacheResult.JOINED: 19})
    assert blobs.joins == 19
    assert storage.size(BLOB, digest) == len(LAYER) and blobs.in_flight == 0


async def test_a_join_across_repositories_makes_one_get_and_a_head_for_each_other_one(
        blobs: BlobService, upstream: FakeUpstream) -> None:
    digest = upstream.add_blob(LAYER, APP, MIRROR)
    held = upstream.hold(digest)
    entered = Tally()
    first = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    others = [Reader(blobs, MIRROR, digest, entered) for _ in range(2)]
    await entered.reach(3)

    await held.send_all(LAYER, pieces=2)
    held.end()

    assert [await r.finished() for r in (first, *others)] == [LAYER] * 3
    assert [r.result for r in (first, *others)] == [CacheResult.MISS] + [CacheResult.JOINED] * 2
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1, blob_call("HEAD", MIRROR, digest): 1})
    # Each was cleared with its own HEAD, which the cache remembers.
    upstream.reset()
    for target in (APP, MIRROR):
        assert await pull(blobs, target, digest) == (LAYER, CacheResult.HIT)
    assert upstream.calls == Counter()


async def test_another_registry_gets_the_blob_from_itself_not_by_a_head(
        blobs: BlobService, upstream: FakeUpstream) -> None:
    """A HEAD proves nothing across registries: any registry could answer 200 for any digest."""
    digest = upstream.add_blob(LAYER, APP, OTHER_REGISTRY)
    held = upstream.hold(digest)
    entered = Tally()
    first = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    joining = Reader(blobs, OTHER_REGISTRY, digest, entered)  # while APP's download runs
    await entered.reach(2)
    await held.send_all(LAYER, pieces=2)
    held.end()
    assert [await first.finished(), await joining.finished()] == [LAYER] * 2
    assert [first.result, joining.result] == [CacheResult.MISS, CacheResult.MISS]
    assert upstream.count("HEAD") == 0
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1, blob_call("GET", OTHER_REGISTRY, digest): 1})

    # Cached now, and known to both registries: a third repository of either is cleared by a HEAD.
    upstream.reset()
    assert await pull(blobs, OTHER_REGISTRY, digest) == (LAYER, CacheResult.HIT)
    assert upstream.calls == Counter()


async def test_a_blob_cached_for_one_registry_is_not_served_through_another_that_lacks_it(
        blobs: BlobService, upstream: FakeUpstream) -> None:
    digest = upstream.add_blob(LAYER, APP)
    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.MISS)
    upstream.reset()
    with pytest.raises(RegistryError) as refused:
        await pull(blobs, OTHER_REGISTRY, digest)
    assert refused.value.code is ErrorCode.BLOB_UNKNOWN
    assert upstream.calls == Counter({blob_call("GET", OTHER_REGISTRY, digest): 1})


async def test_other_credentials_on_the_same_repository_ask_upstream_before_joining(
        blobs: BlobService, upstream: FakeUpstream) -> None:
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    anonymous = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    upstream.access[APP.registry] = "cred:7@1.0"
    with_credential = Reader(blobs, APP, digest, entered)
    await entered.reach(2)

    await held.send_all(LAYER, pieces=2)
    held.end()

    assert [await anonymous.finished(), await with_credential.finished()] == [LAYER, LAYER]
    assert with_credential.result is CacheResult.JOINED
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1, blob_call("HEAD", APP, digest): 1})


@pytest.mark.parametrize("refusal", [ErrorCode.DENIED, ErrorCode.UNAUTHORIZED], ids=attrgetter("name"))
async def test_a_refused_repository_gets_the_refusal_while_the_blob_downloads_and_once_it_is_cached(
        blobs: BlobService, upstream: FakeUpstream, refusal: ErrorCode) -> None:
    digest = upstream.add_blob(LAYER, APP, PRIVATE)
    upstream.refuse(PRIVATE, refusal)
    held = upstream.hold(digest)
    entered = Tally()
    allowed = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    await held.send(LAYER[:1000])

    for when in ("in flight", "cached"):
        with pytest.raises(RegistryError) as refused:
            async with blobs.open(PRIVATE, digest, env=ENV) as body:
                pytest.fail(f"{when}: a refused repository was given a body of {body.size} bytes")
        assert refused.value.code is refusal, when
        with pytest.raises(RegistryError) as refused_stat:
            await blobs.stat(PRIVATE, digest, env=ENV)
        assert refused_stat.value.code is refusal, when
        if when == "in flight":
            assert blobs.in_flight == 1 and blobs.joins == 0
            await held.send(LAYER[1000:])
            held.end()
            assert await allowed.finished() == LAYER

    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1, blob_call("HEAD", PRIVATE, digest): 4})


async def test_the_last_byte_is_held_back_until_the_digest_verifies(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    whole = Reader(blobs, APP, digest, entered)
    # A range that ends well before the end of the blob waits for the verdict too.
    ranged = Reader(blobs, APP, digest, entered, (10, 5000))
    await entered.reach(2)

    await held.send(LAYER[:100_000])
    # What comes before the last byte goes out as it arrives.
    await whole.got.reach(100_000)
    assert whole.got.value == 100_000
    await held.send(LAYER[100_000:])
    # Every byte is upstream's and written; none verified yet.
    await whole.got.reach(len(LAYER) - 1)
    await ranged.got.reach(5000 - 10 - 1)
    assert (whole.got.value, ranged.got.value) == (len(LAYER) - 1, 5000 - 10 - 1)
    assert storage.size(BLOB, digest) is None

    held.end()
    assert await whole.finished() == LAYER
    assert await ranged.finished() == LAYER[10:5000]


@pytest.mark.parametrize("sent", [flipped(LAYER), LAYER[:-1]], ids=["wrong-bytes", "one-byte-short"])
async def test_a_body_that_is_not_the_blob_reaches_no_reader_complete_and_is_not_cached(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage, sent: bytes) -> None:
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    readers = [Reader(blobs, APP, digest, entered) for _ in range(5)]
    await entered.reach(5)

    await held.send_all(sent, pieces=2)
    held.end()

    for reader in readers:
        with pytest.raises(BlobStreamError):
            await reader.finished()
        assert len(reader.received) < len(LAYER)
    await storage.discards.reach(1)
    assert storage.size(BLOB, digest) is None and blobs.in_flight == 0
    assert files_under(storage.layout.blobs) == [] and temp_files(storage) == []

    # Nothing was kept, so the next pull fetches again, and this time gets the blob.
    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.MISS)
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 2})


async def test_a_cached_blob_of_the_wrong_size_on_disk_is_fetched_again(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_blob(LAYER, APP)
    await pull(blobs, APP, digest)
    storage.layout.content(BLOB, digest).write_bytes(LAYER[:-10])
    upstream.reset()

    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.MISS)
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1})
    assert storage.layout.content(BLOB, digest).read_bytes() == LAYER
    assert await pull(blobs, APP, digest) == (LAYER, CacheResult.HIT)
    assert upstream.count() == 1


async def test_aclose_stops_a_download_in_flight_and_leaves_no_temp_file(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_blob(LAYER, APP)
    held = upstream.hold(digest)
    entered = Tally()
    reader = Reader(blobs, APP, digest, entered)
    await entered.reach(1)
    await held.send(LAYER[:1000])
    assert len(temp_files(storage)) == 1

    await asyncio.wait_for(blobs.aclose(), WAIT)

    assert held.stopped.is_set()
    assert temp_files(storage) == [] and files_under(storage.layout.blobs) == []
    assert storage.size(BLOB, digest) is None and blobs.in_flight == 0
    with pytest.raises(BlobStreamError):
        await reader.finished()
