"""Edges of the engine: a client hanging up on a cancelling server, a follower whose download fails, shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from proxy.app import create_app
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.blobs import BlobService, BlobStreamError
from proxy.pullthrough.clearances import Clearances

from .engine_fakes import WAIT, FakeUpstream, ObservedStorage, Tally, blob_call, files_under
from .test_engine_blobs import APP, LAYER, MIRROR, Reader, pull
from .test_engine_http import ServerFactory, hang_up_mid_blob


class ObservedBlobService(BlobService):
    """Lets a test wait until a request has joined a download in flight."""

    def __init__(self, **kwargs: Any) -> None:
        self.joined = Tally()
        super().__init__(**kwargs)

    @property
    def joins(self) -> int:
        return self.joined.value

    @joins.setter
    def joins(self, value: int) -> None:
        self.joined.add(value - self.joined.value)


@pytest.fixture
async def blobs(storage: ObservedStorage, upstream: FakeUpstream) -> AsyncIterator[ObservedBlobService]:
    service = ObservedBlobService(storage=storage, upstream=upstream, clearances=Clearances(ttl=300))
    yield service
    await service.aclose()


async def test_a_client_hanging_up_on_a_cancelling_server_is_not_counted_as_a_server_error(
        tmp_path: Path, aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # aiohttp's own test server cancels a handler whose client went away, as
    # web.run_app(handler_cancellation=True) does: counted as nginx's 499.
    await hang_up_mid_blob(tmp_path, aiohttp_server, caplog,
                           lambda settings: web.AppRunner(create_app(settings), handler_cancellation=True),
                           hung_up_class="4xx")


async def test_a_cleared_follower_is_not_refused_because_the_download_it_followed_was(
        blobs: ObservedBlobService, upstream: FakeUpstream) -> None:
    digest = upstream.add_blob(LAYER, APP, MIRROR)
    upstream.gate = asyncio.Event()
    entered = Tally()
    refused = Reader(blobs, APP, digest, entered)
    await upstream.gets_waiting.reach(1)
    # MIRROR's own HEAD clears it; it follows APP's download, whose GET is then refused.
    follower = Reader(blobs, MIRROR, digest, entered)
    await blobs.joined.reach(1)
    assert upstream.count("HEAD", target=MIRROR) == 1
    upstream.refuse(APP, ErrorCode.DENIED)
    upstream.gate.set()

    with pytest.raises(RegistryError):
        await refused.finished()
    assert await follower.finished() == LAYER


async def test_aclose_before_the_upstream_answers_fails_waiting_readers_without_cancelling_them(
        blobs: BlobService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_blob(LAYER, APP)
    upstream.gate = asyncio.Event()
    waiting = asyncio.ensure_future(pull(blobs, APP, digest))
    await upstream.gets_waiting.reach(1)

    await asyncio.wait_for(blobs.aclose(), WAIT)
    await asyncio.wait({waiting}, timeout=WAIT)

    assert waiting.done() and not waiting.cancelled(), "a reader nobody cancelled ended with CancelledError"
    assert isinstance(waiting.exception(), (RegistryError, BlobStreamError))
    assert files_under(storage.layout.tmp) == []
    assert upstream.calls == Counter({blob_call("GET", APP, digest): 1})
