"""Objects leave the bucket only once their deletion is due: after a grace for reads and redirects, never under a
fill of the same digest, and again at the next sweep when the bucket refused."""

from __future__ import annotations

import contextlib
import os

import aiohttp
from proxy.storage.base import ContentKind
from proxy.storage.objects import ObjectStoreError
from proxy.storage.s3 import REDIRECT_EXPIRY, S3Storage

from .s3_fixtures import S3Env, digest_of

_MANIFEST = ContentKind.MANIFEST


def _key(data: bytes, folder: str = "manifests") -> str:
    return f"{folder}/sha256/{digest_of(data).hex}"


async def _age(env: S3Env, data: bytes, seconds: float = 60) -> None:
    await env.sql("UPDATE cache_content SET last_access = last_access - %s WHERE digest = %s",
                  seconds, str(digest_of(data)))


async def _pending(env: S3Env) -> set[str]:
    return {row[0] for row in await env.sql("SELECT digest FROM cache_deletions")}


async def _put(storage: S3Storage, *items: bytes) -> None:
    for data in items:
        await storage.put(_MANIFEST, digest_of(data), data)
    await storage._index.flush_access()


async def test_eviction_spares_recent_use_and_keeps_the_object_for_urls_already_handed_out(s3env: S3Env) -> None:
    one = await s3env.replica(max_size=1024)
    old, new = os.urandom(1024), os.urandom(1024)
    await _put(one, old, new)
    assert await one.janitor.sweep()
    assert one.janitor.evictions == 0  # both used within the last two flushes: other replicas' use may be unwritten
    url = await one._store.presign(_key(old), REDIRECT_EXPIRY)  # a redirect handed out before the eviction
    await _age(s3env, old)
    assert await one.janitor.sweep()
    assert one.janitor.evictions == 1
    assert one._index.size(_MANIFEST, digest_of(old)) is None  # no replica hands it out any more
    assert set(s3env.objects()) == {_key(old), _key(new)}
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == old
    assert await _pending(s3env) == {str(digest_of(old))}
    await s3env.sql("UPDATE cache_deletions SET due_at = 0")  # the grace is over
    assert await one.janitor.sweep()
    assert set(s3env.objects()) == {_key(new)}
    assert await _pending(s3env) == set()


async def test_content_added_again_cancels_its_pending_deletion(s3env: S3Env) -> None:
    one = await s3env.replica(max_size=1024)
    first, second = os.urandom(1024), os.urandom(1024)
    await _put(one, first, second)
    await _age(s3env, first)
    assert await one.janitor.sweep()
    assert await _pending(s3env) == {str(digest_of(first))}
    await _put(one, first)
    assert await _pending(s3env) == set()
    await s3env.sql("UPDATE cache_deletions SET due_at = 0")
    assert await one.janitor.sweep()
    assert _key(first) in s3env.objects()
    assert one._index.size(_MANIFEST, digest_of(first)) == 1024


async def test_a_due_deletion_waits_while_another_replica_fills_the_blob_again(s3env: S3Env) -> None:
    one = await s3env.replica("one", deletion_grace=0)
    two = await s3env.replica("two")
    data = os.urandom(1000)
    digest = digest_of(data)
    partial = await one.begin_blob(digest, len(data))
    await partial.append([data])
    await partial.commit()
    partial.close()
    await one._index.remove([(ContentKind.BLOB, digest)])  # dropped: its deletion is due at once
    claim = await two.claim_fill(digest)
    assert claim is not None
    partial = await two.begin_blob(digest, len(data))
    await partial.append([data])
    # The fill may complete its upload at any moment: the object is not deleted under it.
    assert await one.janitor.sweep()
    assert _key(data, "blobs") in s3env.objects()
    await partial.commit()
    partial.close()
    await claim.release()
    assert await _pending(s3env) == set()
    assert await one.janitor.sweep()
    assert s3env.objects() == {_key(data, "blobs"): len(data)}
    assert two.size(ContentKind.BLOB, digest) == len(data)


async def test_deletions_the_bucket_refused_stay_due_and_the_next_sweep_makes_them(s3env: S3Env) -> None:
    one = await s3env.replica(max_size=1024, deletion_grace=0)
    evicted, dropped, kept = os.urandom(1024), os.urandom(10), os.urandom(1024)
    await _put(one, evicted, dropped, kept)
    await _age(s3env, evicted, 120)
    await _age(s3env, dropped, 60)
    s3env.server.stop()
    await one._drop(_MANIFEST, digest_of(dropped))
    with contextlib.suppress(ObjectStoreError):  # the round also fails to list the uploads to abort
        await one.janitor.sweep()
    assert one.janitor.evictions == 1
    assert await _pending(s3env) == {str(digest_of(evicted)), str(digest_of(dropped))}
    s3env.server.start()
    assert set(s3env.objects()) == {_key(evicted), _key(dropped), _key(kept)}
    assert await one.janitor.sweep()
    assert set(s3env.objects()) == {_key(kept)}
    assert await _pending(s3env) == set()
