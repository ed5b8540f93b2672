"""Two S3Storage instances on one bucket and one database, as two replicas: commits heard, fills claimed, one janitor."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from proxy.storage.base import ContentKind
from proxy.storage.s3 import S3Storage
from proxy.storage.uploads import PART

from .s3_fixtures import S3Env, digest_of, eventually


async def _commit_blob(storage: S3Storage, data: bytes) -> None:
    partial = await storage.begin_blob(digest_of(data), len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()


async def test_a_commit_on_one_replica_reaches_the_other_within_a_second(s3env: S3Env) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    data = os.urandom(4096)
    await _commit_blob(one, data)
    took = await eventually(lambda: two.size(ContentKind.BLOB, digest_of(data)) == 4096, within=1.0,
                            what="replica two to hear of the commit")
    assert took < 1.0
    manifest = b'{"shared": true}'
    await two.put(ContentKind.MANIFEST, digest_of(manifest), manifest)
    await eventually(lambda: one.size(ContentKind.MANIFEST, digest_of(manifest)) is not None, within=1.0,
                     what="replica one to hear of the manifest")
    assert await one.read_small(ContentKind.MANIFEST, digest_of(manifest)) == manifest


async def test_only_one_replica_claims_a_fill_and_the_other_waits_for_its_commit(s3env: S3Env) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    data = os.urandom(PART + 10)
    digest = digest_of(data)
    claim = await one.claim_fill(digest)
    assert claim is not None
    assert await two.claim_fill(digest) is None
    waiting = asyncio.ensure_future(two.wait_fill(digest))
    await asyncio.sleep(0)
    assert not waiting.done()
    started = time.monotonic()
    await _commit_blob(one, data)
    await asyncio.wait_for(waiting, timeout=2)
    assert time.monotonic() - started < 2
    assert two.size(ContentKind.BLOB, digest) == len(data)
    await claim.release()
    again = await two.claim_fill(digest)
    assert again is not None
    await again.release()


async def test_wait_fill_returns_once_the_filler_lets_go_without_a_commit(s3env: S3Env) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    digest = digest_of(b"never committed")
    claim = await one.claim_fill(digest)
    assert claim is not None
    waiting = asyncio.ensure_future(two.wait_fill(digest))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await claim.release()
    await asyncio.wait_for(waiting, timeout=2)
    assert two.size(ContentKind.BLOB, digest) is None
    taken = await two.claim_fill(digest)
    assert taken is not None
    await taken.release()


async def test_a_claim_taken_before_the_commit_was_heard_sees_the_committed_blob(
        s3env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    monkeypatch.setattr(two._index, "_apply", lambda payload: None)  # the NOTIFY of the commit is late
    data = os.urandom(4096)
    await _commit_blob(one, data)
    claim = await two.claim_fill(digest_of(data))
    assert claim is not None
    assert two.size(ContentKind.BLOB, digest_of(data)) == 4096  # so the caller serves it, not fetches it again
    await claim.release()


async def test_a_wait_for_a_committed_blob_asks_for_the_lock_less_and_less_often(s3env: S3Env) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    data = os.urandom(4096)
    digest = digest_of(data)
    claim = await one.claim_fill(digest)
    assert claim is not None
    await _commit_blob(one, data)
    await eventually(lambda: two.size(ContentKind.BLOB, digest) is not None, what="the commit to reach two")
    tries = 0
    try_lock = two._locks.try_lock

    async def counted(key: int) -> bool:
        nonlocal tries
        tries += 1
        return await try_lock(key)

    two._locks.try_lock = counted  # type: ignore[method-assign]
    waiting = asyncio.ensure_future(two.wait_fill(digest))
    done, _ = await asyncio.wait({waiting}, timeout=0.6)
    assert not done
    assert tries <= 5, tries  # not every 50 ms
    await claim.release()
    await asyncio.wait_for(waiting, timeout=2)


async def test_the_janitor_evicts_the_least_recently_used_down_to_max_size(s3env: S3Env) -> None:
    one = await s3env.replica("one", max_size=3 * 1024, deletion_grace=0)
    two = await s3env.replica("two", max_size=3 * 1024)
    items = [os.urandom(1024) for _ in range(4)]
    for data in items:
        await one.put(ContentKind.MANIFEST, digest_of(data), data)
    await s3env.sql("UPDATE cache_content SET last_access = last_access - 60")  # none is recent any more
    # The oldest is used again on the other replica: the second oldest goes.
    await eventually(lambda: two.size(ContentKind.MANIFEST, digest_of(items[0])) is not None,
                     what="replica two to hear of the manifests")
    assert two.size(ContentKind.MANIFEST, digest_of(items[0])) == 1024
    await two._index.flush_access()
    assert await one.janitor.sweep()
    assert one.janitor.evictions == 1
    kept = {f"manifests/sha256/{digest_of(data).hex}" for data in (items[0], items[2], items[3])}
    assert set(s3env.objects()) == kept
    await eventually(lambda: two.stats().manifests == 3, within=1.0, what="replica two to hear of the eviction")
    assert two.size(ContentKind.MANIFEST, digest_of(items[1])) is None
    assert one.stats().used == 3 * 1024


async def test_the_janitor_aborts_uploads_nobody_is_filling_and_only_one_replica_sweeps(s3env: S3Env) -> None:
    one, two = await s3env.replica("one"), await s3env.replica("two")
    client = s3env.server.client
    orphan, filling = digest_of(b"orphan"), digest_of(b"filling")
    for digest in (orphan, filling):
        client.create_multipart_upload(Bucket=s3env.bucket, Key=f"blobs/sha256/{digest.hex}")
    claim = await two.claim_fill(filling)
    assert claim is not None
    assert await one.janitor.sweep()
    assert [key for key, _ in s3env.open_uploads()] == [f"blobs/sha256/{filling.hex}"]
    await claim.release()
    # One replica at a time: while one sweeps (holds "evict"), the other's round is skipped.
    await one._locks.try_lock(_evict_key())
    try:
        assert not await two.janitor.sweep()
    finally:
        await one._locks.unlock(_evict_key())
    assert await two.janitor.sweep()
    assert s3env.open_uploads() == []


async def test_a_replica_own_upload_in_progress_is_left_alone_by_its_janitor(s3env: S3Env) -> None:
    one = await s3env.replica("one")
    data = os.urandom(PART + 10)
    claim = await one.claim_fill(digest_of(data))
    assert claim is not None
    partial = await one.begin_blob(digest_of(data), len(data))
    await partial.append([data])
    assert await one.janitor.sweep()
    assert len(s3env.open_uploads()) == 1
    await partial.commit()
    partial.close()
    await claim.release()
    assert s3env.open_uploads() == []


async def test_a_fill_that_takes_over_aborts_the_upload_its_dead_predecessor_left(s3env: S3Env) -> None:
    one = await s3env.replica("one")
    data = os.urandom(PART + 10)
    key = f"blobs/sha256/{digest_of(data).hex}"
    s3env.server.client.create_multipart_upload(Bucket=s3env.bucket, Key=key)  # left by a replica that died
    claim = await one.claim_fill(digest_of(data))
    assert claim is not None
    await _commit_blob(one, data)
    await claim.release()
    assert s3env.open_uploads() == []
    assert s3env.objects() == {key: len(data)}


def _evict_key() -> int:
    from proxy.postgres.locks import lock_key

    return lock_key("evict")
