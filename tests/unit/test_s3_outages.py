"""The S3 storage when the bucket is down, answers oddly or lost an object; blobs it must not keep; failed start-ups."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from proxy.config.settings import Settings, StateSettings, StorageSettings
from proxy.postgres.pool import PgUnavailable
from proxy.storage.base import ContentKind, StorageFull
from proxy.storage.choose import OpenedStorage, open_storage
from proxy.storage.objects import ObjectStoreError
from proxy.storage.uploads import PART

from .s3_fixtures import S3Env, digest_of, eventually

MiB = 1024 * 1024
SECRET = "X-Amz-Signature"
PRESIGNED = f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&{SECRET}=0123abcd&X-Amz-Security-Token=session"


async def _commit_blob(storage: Any, data: bytes) -> None:
    partial = await storage.begin_blob(digest_of(data), len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()


async def test_with_redirect_the_local_tier_serves_its_blobs_and_the_rest_is_not_probed(s3env: S3Env) -> None:
    filler = await s3env.replica("filler", redirect=True)
    other = await s3env.replica("other", redirect=True)
    data = os.urandom(4096)
    digest = digest_of(data)
    await _commit_blob(filler, data)
    assert await filler.redirect_url(ContentKind.BLOB, digest) is None  # on its local tier: served from there
    await eventually(lambda: other.size(ContentKind.BLOB, digest) is not None, what="the commit to reach the other")
    s3env.server.stop()
    async with filler.open(ContentKind.BLOB, digest) as content:
        assert content is not None
        assert b"".join([p async for p in content.span(0, content.size).pieces()]) == data
    # Only in the bucket: opened without asking the bucket, since the client is sent there.
    async with other.open(ContentKind.BLOB, digest) as content:
        assert content is not None
        assert await other.redirect_url(ContentKind.BLOB, digest) is not None
    assert other.stats().backend_errors == 0


async def test_readiness_checks_the_local_disk_not_the_bucket(s3env: S3Env) -> None:
    storage = await s3env.replica()
    s3env.server.stop()
    await storage.check_writable()
    assert storage.stats().backend_errors == 0


@pytest.fixture
async def odd_server(aiohttp_server: Any) -> AsyncIterator[str]:
    """Answers GET /garbage with no HTTP at all, and GET /loop with a redirect to itself, forever."""
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"garbage http://127.0.0.1/b/k{PRESIGNED}\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url))

    raw = await asyncio.start_server(garbage, "127.0.0.1", 0)
    app = web.Application()
    app.router.add_get("/loop", loop)
    looping = await aiohttp_server(app, host="127.0.0.1")
    raw_port = raw.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{raw_port}/garbage{PRESIGNED} {looping.make_url('/loop')}{PRESIGNED}"
    finally:
        raw.close()
        await raw.wait_closed()


async def test_no_presigned_url_reaches_an_error_or_the_log(s3env: S3Env, odd_server: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    writer, reader = await s3env.replica("writer"), await s3env.replica("reader")
    manifest = b'{"odd": true}'
    await writer.put(ContentKind.MANIFEST, digest_of(manifest), manifest)
    blob = os.urandom(2048)
    await _commit_blob(writer, blob)
    await eventually(lambda: reader.size(ContentKind.BLOB, digest_of(blob)) is not None, what="the commit")
    caplog.set_level(logging.DEBUG)
    for url in odd_server.split():
        async def presign(key: str, expires: int, url: str = url) -> str:
            return url
        reader._store.presign = presign  # type: ignore[method-assign]
        assert await reader.read_small(ContentKind.MANIFEST, digest_of(manifest)) is None
        with pytest.raises(ObjectStoreError) as raised:
            async with reader.open(ContentKind.BLOB, digest_of(blob)):
                pass
        assert SECRET not in str(raised.value) and "Security-Token" not in str(raised.value)
        assert "s3://" in str(raised.value)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("proxy."))
    assert "cannot read manifest" in logged and "TooManyRedirects" in logged
    assert SECRET not in logged and "Security-Token" not in logged
    assert reader.size(ContentKind.MANIFEST, digest_of(manifest)) is not None  # a failure, not a loss


async def test_a_manifest_gone_from_the_bucket_is_forgotten_and_put_again(s3env: S3Env) -> None:
    writer, reader = await s3env.replica("writer"), await s3env.replica("reader")
    manifest = b'{"gone": true}'
    digest = digest_of(manifest)
    key = f"manifests/sha256/{digest.hex}"
    await writer.put(ContentKind.MANIFEST, digest, manifest)
    s3env.server.client.delete_object(Bucket=s3env.bucket, Key=key)
    await eventually(lambda: reader.size(ContentKind.MANIFEST, digest) is not None, what="the put")
    assert await reader.read_small(ContentKind.MANIFEST, digest) is None
    await eventually(lambda: writer._index.size(ContentKind.MANIFEST, digest) is None, within=2,
                     what="every replica to forget it")
    await reader.put(ContentKind.MANIFEST, digest, manifest)
    assert key in s3env.objects()


async def test_a_blob_larger_than_max_size_is_not_cached(s3env: S3Env) -> None:
    storage = await s3env.replica(max_size=PART + MiB)
    big = os.urandom(PART + 2 * MiB)
    with pytest.raises(StorageFull):
        await storage.begin_blob(digest_of(big), len(big))
    # Of unknown size: refused once it grows past, with its upload aborted.
    partial = await storage.begin_blob(digest_of(big))
    await partial.append([big[:PART + MiB // 2]])
    assert len(s3env.open_uploads()) == 1
    with pytest.raises(StorageFull):
        await partial.append([big[PART + MiB // 2:]])
    assert partial.written == PART + MiB // 2 and partial.hashed == partial.written
    await partial.uncache()
    partial.close()
    assert s3env.open_uploads() == []
    assert s3env.objects() == {}


async def test_an_abort_waits_for_the_parts_on_their_way(s3env: S3Env) -> None:
    storage = await s3env.replica()
    data = os.urandom(PART + MiB)
    partial = await storage.begin_blob(digest_of(data), len(data))
    store = storage._store
    real_part, real_abort = store.upload_part, store.abort_upload
    gate, order = asyncio.Event(), []

    async def upload_part(*args: Any) -> str:
        await gate.wait()
        etag = await real_part(*args)
        order.append("part")
        return etag

    async def abort_upload(*args: Any) -> None:
        order.append("abort")
        await real_abort(*args)

    store.upload_part, store.abort_upload = upload_part, abort_upload  # type: ignore[method-assign]
    await partial.append([data])  # one part on its way
    discarding = asyncio.ensure_future(partial.discard())
    done, _ = await asyncio.wait({discarding}, timeout=0.3)
    assert not done and order == []
    gate.set()
    await discarding
    partial.close()
    assert order == ["part", "abort"]
    assert s3env.open_uploads() == []


async def test_a_listener_that_never_listens_fails_start_up_with_one_line(s3env: S3Env, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.storage.s3 as s3

    class Deaf:
        def __init__(self, *args: Any) -> None:
            self.ready = asyncio.Event()

        async def run(self) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(s3, "Listener", Deaf)
    monkeypatch.setattr(s3, "_LISTEN_TIMEOUT", 0.1)
    settings = Settings(data_dir=tmp_path / "deaf", state=StateSettings(url=s3env.pg_url),
                        storage=StorageSettings(backend="s3", bucket=s3env.bucket, endpoint_url=s3env.server.endpoint_url))
    with pytest.raises(PgUnavailable, match="cannot listen for the cache's changes on postgresql://") as raised:
        await open_storage(settings)
    password = urlsplit(s3env.pg_url).password
    assert password and password not in str(raised.value)


async def test_a_start_up_failing_after_the_storage_opened_closes_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.app as app

    closed = []

    async def opened(settings: Settings) -> OpenedStorage:
        storage = await open_storage(settings)
        close = storage.close

        async def closing() -> None:
            closed.append(storage)
            await close()
        storage.close = closing  # type: ignore[method-assign]
        return storage

    def no_pools(timeouts: object) -> None:
        raise RuntimeError("no pools")

    monkeypatch.setattr(app, "open_storage", opened)
    monkeypatch.setattr(app, "open_pools", no_pools)
    runner = web.AppRunner(app.create_app(Settings(data_dir=tmp_path / "data", secret_key_file=tmp_path / "key")),
                           handle_signals=False)
    try:
        with pytest.raises(RuntimeError, match="no pools"):
            await runner.setup()
    finally:
        await runner.cleanup()
    assert len(closed) == 1
