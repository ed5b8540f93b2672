"""BlobService on two S3Storage replicas sharing one bucket and one database, against one counting fake upstream."""

from __future__ import annotations

import asyncio
import os

from proxy.pullthrough.blobs import BlobService
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.download import Piece
from proxy.pullthrough.ports import CacheResult
from proxy.reference import Target
from proxy.storage.uploads import PART

from .engine_fakes import FakeUpstream
from .s3_fixtures import S3Env

APP = Target("registry-a.test", "team/app")
ENV = "default"


async def test_concurrent_cold_pulls_on_two_replicas_make_one_upstream_get(s3env: S3Env) -> None:
    upstream = FakeUpstream()
    layer = os.urandom(PART + PART // 2)
    digest = upstream.add_blob(layer, APP)
    held = upstream.hold(digest)
    services = [BlobService(storage=await s3env.replica(name), upstream=upstream, clearances=Clearances(ttl=300))
                for name in ("one", "two")]

    async def pull(blobs: BlobService) -> tuple[bytes, CacheResult]:
        async with blobs.open(APP, digest, env=ENV) as body:
            return b"".join([await _bytes(piece) async for piece in body.read()]), body.result

    try:
        pulls = [asyncio.ensure_future(pull(blobs)) for blobs in services for _ in range(3)]
        await held.asked.reach(1)  # one download has begun
        await held.send_all(layer, 6)
        held.end()
        results = await asyncio.wait_for(asyncio.gather(*pulls), timeout=10)
        assert all(data == layer for data, _ in results)
        assert upstream.count("GET") == 1
        # Warm on both now, with no further upstream GET.
        for blobs in services:
            assert (await pull(blobs)) == (layer, CacheResult.HIT)
        assert upstream.count("GET") == 1
        assert s3env.open_uploads() == []
        assert set(s3env.objects()) == {f"blobs/sha256/{digest.hex}"}
    finally:
        for blobs in services:
            await blobs.aclose()


async def _bytes(piece: Piece) -> bytes:
    if isinstance(piece, bytes | memoryview):
        return bytes(piece)
    return b"".join([chunk async for chunk in piece.pieces()])
