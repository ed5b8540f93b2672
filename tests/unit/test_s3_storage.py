"""The S3 storage against moto's S3 server and PostgreSQL: verified before visible, the local tier, failures counted."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from proxy.config.settings import Settings, StateSettings, StorageSettings
from proxy.reference import Digest
from proxy.storage.base import ContentKind, DigestMismatch, VerifyReport
from proxy.storage.choose import open_storage
from proxy.storage.filesystem import FilesystemStorage
from proxy.storage.s3 import S3Storage
from proxy.storage.uploads import PART

from .s3_fixtures import S3Env, digest_of, eventually

MiB = 1024 * 1024


async def _body(storage: S3Storage, kind: ContentKind, digest: Digest) -> bytes:
    async with storage.open(kind, digest) as content:
        assert content is not None
        return b"".join([piece async for piece in content.span(0, content.size).pieces()])


async def _rows(env: S3Env) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(env.pg_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM cache_content")).fetchone()
        assert row is not None
        return int(row[0])


async def test_a_partial_blob_is_invisible_until_its_verified_commit_and_followed_while_it_grows(s3env: S3Env) -> None:
    storage = await s3env.replica()
    data = os.urandom(2 * PART + 3 * MiB)
    digest = digest_of(data)
    partial = await storage.begin_blob(digest, len(data))
    for offset in range(0, len(data) - MiB, MiB):
        await partial.append([data[offset:offset + MiB]])
    # Readers behind the head follow the temp file.
    followed = b"".join([piece async for piece in partial.span(PART, partial.written).pieces()])
    assert followed == data[PART:partial.written]
    key = f"blobs/sha256/{digest.hex}"
    assert key not in s3env.objects()
    assert [k for k, _ in s3env.open_uploads()] == [key]  # the parts are on their way
    assert storage.size(ContentKind.BLOB, digest) is None
    assert await _rows(s3env) == 0

    await partial.append([data[partial.written:]])
    await partial.commit()
    partial.close()
    assert s3env.objects() == {key: len(data)}
    assert s3env.server.read(s3env.bucket, key) == data
    assert s3env.open_uploads() == []
    assert storage.size(ContentKind.BLOB, digest) == len(data)
    assert await _rows(s3env) == 1


async def test_a_digest_mismatch_aborts_the_upload_and_leaves_nothing(s3env: S3Env) -> None:
    storage = await s3env.replica()
    data = os.urandom(PART + MiB)
    digest = digest_of(b"something else")
    partial = await storage.begin_blob(digest, len(data))
    await partial.append([data])
    assert len(s3env.open_uploads()) == 1
    with pytest.raises(DigestMismatch):
        await partial.commit()
    await partial.discard()
    partial.close()
    assert s3env.objects() == {}
    assert s3env.open_uploads() == []
    assert storage.size(ContentKind.BLOB, digest) is None
    assert await _rows(s3env) == 0


async def test_discard_and_uncache_abort_the_upload(s3env: S3Env) -> None:
    storage = await s3env.replica()
    data = os.urandom(PART + MiB)
    for stop in ("discard", "uncache"):
        partial = await storage.begin_blob(digest_of(data), len(data))
        await partial.append([data])
        assert len(s3env.open_uploads()) == 1
        if stop == "discard":
            await partial.discard()
        else:
            await partial.uncache()
            # What was written stays readable until closed.
            assert b"".join([p async for p in partial.span(0, 10).pieces()]) == data[:10]
        partial.close()
        assert s3env.open_uploads() == [], stop
        assert s3env.objects() == {}, stop


async def test_small_blobs_and_manifests_are_one_put_and_read_back(s3env: S3Env) -> None:
    storage = await s3env.replica()
    blob = os.urandom(1000)
    partial = await storage.begin_blob(digest_of(blob), len(blob))
    await partial.append([blob])
    assert s3env.open_uploads() == []
    await partial.commit()
    partial.close()
    manifest = b'{"schemaVersion": 2}'
    await storage.put(ContentKind.MANIFEST, digest_of(manifest), manifest)
    assert s3env.objects() == {f"blobs/sha256/{digest_of(blob).hex}": 1000,
                               f"manifests/sha256/{digest_of(manifest).hex}": len(manifest)}
    assert await storage.read_small(ContentKind.MANIFEST, digest_of(manifest)) == manifest
    assert await _body(storage, ContentKind.BLOB, digest_of(blob)) == blob
    stats = storage.stats()
    assert (stats.backend, stats.blobs, stats.manifests, stats.used) == ("s3", 1, 1, 1000 + len(manifest))


async def test_the_local_tier_serves_with_the_bucket_down_and_failures_are_counted(s3env: S3Env) -> None:
    storage = await s3env.replica()
    data = os.urandom(3 * MiB)
    digest = digest_of(data)
    partial = await storage.begin_blob(digest, len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()
    s3env.server.stop()
    assert await _body(storage, ContentKind.BLOB, digest) == data
    assert storage.stats().backend_errors == 0
    await storage.check_writable()  # ready: the local tier serves
    manifest = b'{"down": true}'
    await storage.put(ContentKind.MANIFEST, digest_of(manifest), manifest)  # kept on this replica only
    assert await storage.read_small(ContentKind.MANIFEST, digest_of(manifest)) == manifest
    assert storage.stats().backend_errors == 1
    s3env.server.start()
    await storage.check_writable()


async def test_a_blob_only_in_the_bucket_streams_from_it_and_then_stays_on_the_local_tier(s3env: S3Env) -> None:
    writer = await s3env.replica("writer")
    reader = await s3env.replica("reader")
    data = os.urandom(PART + 5)
    digest = digest_of(data)
    partial = await writer.begin_blob(digest, len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()
    await _wait_size(reader, digest)
    async with reader.open(ContentKind.BLOB, digest) as content:
        assert content is not None
        assert b"".join([p async for p in content.span(10, 20).pieces()]) == data[10:20]
        assert b"".join([p async for p in content.span(0, content.size).pieces()]) == data
    s3env.server.stop()
    assert await _body(reader, ContentKind.BLOB, digest) == data  # from its local tier now
    errors = reader.stats().backend_errors
    other = os.urandom(100)
    await writer.put(ContentKind.MANIFEST, digest_of(other), other)  # fails: the bucket is down
    s3env.server.start()
    assert reader.stats().backend_errors == errors


async def test_redirect_urls_fetch_the_bytes_when_redirect_is_on(s3env: S3Env) -> None:
    plain = await s3env.replica("plain")
    redirecting = await s3env.replica("redirecting", redirect=True)
    manifest = b'{"redirect": 1}'
    digest = digest_of(manifest)
    assert await redirecting.redirect_url(ContentKind.MANIFEST, digest) is None  # not in the bucket
    await plain.put(ContentKind.MANIFEST, digest, manifest)
    assert await plain.redirect_url(ContentKind.MANIFEST, digest) is None
    await _wait_size(redirecting, digest, ContentKind.MANIFEST)
    url = await redirecting.redirect_url(ContentKind.MANIFEST, digest)
    assert url is not None and url.startswith(s3env.server.endpoint_url)
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == manifest


async def _wait_size(storage: S3Storage, digest: Digest, kind: ContentKind = ContentKind.BLOB) -> None:
    await eventually(lambda: storage.size(kind, digest) is not None, within=2,
                     what="the commit to reach the other replica")


async def test_a_blob_corrupted_in_the_bucket_is_dropped_once_read_whole(s3env: S3Env) -> None:
    writer = await s3env.replica("writer")
    reader = await s3env.replica("reader")
    data = os.urandom(4096)
    digest = digest_of(data)
    partial = await writer.begin_blob(digest, len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()
    key = f"blobs/sha256/{digest.hex}"
    s3env.server.client.put_object(Bucket=s3env.bucket, Key=key, Body=b"x" * 4096)
    await _wait_size(reader, digest)
    assert await _body(reader, ContentKind.BLOB, digest) == b"x" * 4096
    await eventually(lambda: writer._index.size(ContentKind.BLOB, digest) is None, within=2,
                     what="the corrupt blob to be forgotten on every replica")
    assert reader.size(ContentKind.BLOB, digest) is None  # and not kept on its local tier
    assert key not in s3env.objects()


async def test_open_storage_builds_the_configured_backend(s3env: S3Env, tmp_path: Path) -> None:
    default = await open_storage(Settings(data_dir=tmp_path / "fs"))
    try:
        assert isinstance(default, FilesystemStorage)
    finally:
        await default.close()
    shared = await open_storage(Settings(
        data_dir=tmp_path / "s3", state=StateSettings(url=s3env.pg_url),
        storage=StorageSettings(backend="s3", bucket=s3env.bucket, endpoint_url=s3env.server.endpoint_url)))
    try:
        assert isinstance(shared, S3Storage)
        assert shared.stats().backend == "s3"
        await shared.check_writable()
    finally:
        await shared.close()


async def test_verify_rehashes_the_bucket_and_the_local_tier_and_drops_what_fails(s3env: S3Env) -> None:
    storage = await s3env.replica()
    good, corrupt, gone = (os.urandom(2048) for _ in range(3))
    for data in (good, corrupt, gone):
        partial = await storage.begin_blob(digest_of(data), len(data))
        await partial.append([data])
        await partial.commit()
        partial.close()
    client = s3env.server.client
    client.put_object(Bucket=s3env.bucket, Key=f"blobs/sha256/{digest_of(corrupt).hex}", Body=b"y" * 2048)
    client.delete_object(Bucket=s3env.bucket, Key=f"blobs/sha256/{digest_of(gone).hex}")
    report = VerifyReport()
    await storage.verify(report)
    assert report.finished is not None
    # Three in the bucket, three copies on the local tier.
    assert (report.objects, report.checked, report.mismatched, report.missing) == (6, 5, 1, 1)
    assert s3env.objects() == {f"blobs/sha256/{digest_of(good).hex}": 2048}
    assert storage.stats().blobs == 1
