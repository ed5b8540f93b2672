"""The cache in an S3-compatible bucket, shared by every replica: ``Storage`` for ``storage.backend: s3``.

::

    bucket/<prefix>blobs/<alg>/<hex>      verified blobs: complete only once the digest matched (``uploads``)
    bucket/<prefix>manifests/<alg>/<hex>  verified manifests, one PUT each
    PostgreSQL cache_* tables             what the bucket holds, links and tags (``shared_index``, ``shared_links``)
    <data_dir>/cache/                     this replica's local tier and the temp files of its downloads (``local_tier``)

Content is visible once its row is in ``cache_content``, which is inserted
only after the object is complete; every replica hears of it by NOTIFY.
Reads take the local tier first, then stream the object from the bucket.
Downloads are claimed per digest with a PostgreSQL advisory lock, so replicas
make one upstream GET between them; the lock goes with the session of a
replica that dies, and the next claim takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from proxy.postgres.listen import Listener
from proxy.postgres.locks import SessionLocks
from proxy.postgres.pool import PgPool, PgUnavailable
from proxy.reference import Digest, Target
from proxy.storage.base import CacheStats, Content, ContentKind, ManifestLink, StorageFull, TagRecord, VerifyReport
from proxy.storage.bucket_verify import verify_bucket
from proxy.storage.files import IoPool
from proxy.storage.janitor import Janitor, fill_lock
from proxy.storage.local_tier import LocalTier
from proxy.storage.objects import ObjectMissing, ObjectRange, ObjectStore, ObjectStoreError
from proxy.storage.shared_index import CHANNEL, SharedIndex
from proxy.storage.shared_links import SharedLinks
from proxy.storage.small import SmallContent
from proxy.storage.uploads import S3PartialBlob
from proxy.storage.verify import verify_content

__all__ = ["S3Storage"]

log = logging.getLogger(__name__)

# How long a presigned URL handed to a client (redirect) or to this process's own GET stays valid.
REDIRECT_EXPIRY = 20 * 60
_READ_EXPIRY = 60 * 60
# How long an evicted object stays in the bucket: past every URL presigned before its eviction, with time for a
# read begun just before its URL expired to finish.
DELETION_GRACE = max(REDIRECT_EXPIRY, _READ_EXPIRY) + 10 * 60
# How long wait_fill waits at most, and how often it looks whether the filling replica is gone.
_WAIT = 5.0
_POLL = 0.5
# How long start waits for the listener to listen.
_LISTEN_TIMEOUT = 30.0


class _Claim:
    def __init__(self, locks: SessionLocks, key: int) -> None:
        self._locks = locks
        self._key: int | None = key

    async def release(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            await self._locks.unlock(key)


@dataclass
class _BucketContent:
    """Content in the bucket, read as it is sent; a whole blob read this way is kept on the local tier too."""

    store: ObjectStore
    local: LocalTier
    kind: ContentKind
    digest: Digest
    url: str = field(repr=False)  # presigned: a credential while it lives
    size: int = 0

    def span(self, start: int, end: int) -> ObjectRange:
        whole = self.kind is ContentKind.BLOB and start == 0 and end == self.size
        sink = self.local.filler(self.digest, self.size) if whole else None
        return self.store.range(self.store.key(self.kind, self.digest), self.url, start, end - start, sink)


class S3Storage:
    def __init__(self, data_dir: Path, *, bucket: str, state_url: str, max_size: int, local_size: int,
                 prefix: str = "", region: str | None = None, endpoint_url: str | None = None,
                 redirect: bool = False, memory: int = 32 * 1024 * 1024, janitor_interval: float | None = 60.0,
                 flush_interval: float = 2.0, deletion_grace: float = DELETION_GRACE) -> None:
        self._io = IoPool()
        self._local = LocalTier(data_dir, self._io, max_size=local_size, on_mismatch=self._corrupt)
        self._store = ObjectStore(bucket=bucket, prefix=prefix, region=region, endpoint_url=endpoint_url)
        self._url = state_url
        self._pool = PgPool(state_url, name="storage")
        self._index = SharedIndex(self._pool)
        self._links = SharedLinks(self._pool)
        self._locks = SessionLocks(state_url)
        self._small = SmallContent(memory)
        self._redirect = redirect
        self._max_size = max_size
        # Uses younger than two flushes may be unwritten on other replicas: eviction spares them.
        self.janitor = Janitor(index=self._index, store=self._store, locks=self._locks, max_size=max_size,
                               flush=self._index.flush_access, grace=deletion_grace, recent=2 * flush_interval)
        self._janitor_interval = janitor_interval
        self._flush_interval = flush_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._drops: set[asyncio.Task[None]] = set()
        self._disk_full = 0

    async def start(self) -> None:
        await self._io.run(self._local.load)
        await self._store.start()
        await self._pool.open()
        await self._index.open()
        await self._locks.open()
        listener = Listener(self._url, [CHANNEL], self._index.on_notify)
        self._tasks = [asyncio.create_task(listener.run()), asyncio.create_task(self._flush_every())]
        if self._janitor_interval is not None:  # None: it sweeps only when asked (the tests)
            self._tasks.append(asyncio.create_task(self.janitor.run(self._janitor_interval)))
        # Until it listens, commits of other replicas would go unheard.
        try:
            await asyncio.wait_for(listener.ready.wait(), timeout=_LISTEN_TIMEOUT)
        except TimeoutError:
            raise PgUnavailable(f"cannot listen for the cache's changes on {self._pool.description} "
                                f"within {_LISTEN_TIMEOUT:g} s") from None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._drops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._index.flush_access()
        await self._index.close()
        await self._locks.close()
        await self._pool.close()
        await self._store.close()
        await asyncio.to_thread(self._io.close)

    def size(self, kind: ContentKind, digest: Digest) -> int | None:
        in_bucket = self._index.size(kind, digest)
        local = self._local.content.size(kind, digest)
        return in_bucket if in_bucket is not None else local

    async def claim_fill(self, digest: Digest) -> _Claim | None:
        key = fill_lock(digest)
        # PgUnavailable when PostgreSQL is away, rather than have the caller wait for a filler that may not exist.
        if await self._locks.try_lock(key):
            claim = _Claim(self._locks, key)
            try:
                # The map may not have heard yet of the commit of the filler that just let go; the row is the truth.
                await self._index.lookup(ContentKind.BLOB, digest)
            except BaseException:
                await claim.release()
                raise
            return claim
        return None

    async def wait_fill(self, digest: Digest) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _WAIT
        key = fill_lock(digest)
        if self._index.holds(ContentKind.BLOB, digest):
            # Committed already: the filler is recording its links, and lets go in a moment. Looked at again
            # soon, then less often: the lock's one connection serves every claim of this replica.
            pause = _POLL / 10
            while (left := deadline - loop.time()) > 0:
                if await self._locks.try_lock(key):
                    await self._locks.unlock(key)
                    return
                await asyncio.sleep(min(pause, left))
                pause = min(2 * pause, _POLL)
            return
        committed = asyncio.ensure_future(self._index.committed(digest))
        try:
            while (left := deadline - loop.time()) > 0:
                done, _ = await asyncio.wait({committed}, timeout=min(_POLL, left))
                if done:
                    return
                # Free: the download ended without a commit (failed, or its replica died).
                if await self._locks.try_lock(key):
                    await self._locks.unlock(key)
                    return
        finally:
            committed.cancel()
            await asyncio.gather(committed, return_exceptions=True)

    async def redirect_url(self, kind: ContentKind, digest: Digest) -> str | None:
        # What the local tier holds is served from there: sooner, and still with the bucket down.
        if (not self._redirect or self._index.size(kind, digest) is None
                or self._local.content.size(kind, digest) is not None):
            return None
        try:
            return await self._store.presign(self._store.key(kind, digest), REDIRECT_EXPIRY)
        except ObjectStoreError as exc:
            log.warning("serving %s through the proxy: %s", digest, exc)
            return None

    @asynccontextmanager
    async def open(self, kind: ContentKind, digest: Digest) -> AsyncIterator[Content | None]:
        async with self._local.content.open(kind, digest) as local:
            if local is not None:
                yield local
                return
        size = self._index.size(kind, digest)
        if size is None:
            yield None
            return
        key = self._store.key(kind, digest)
        url = await self._store.presign(key, _READ_EXPIRY)
        # Asked before anything is sent: with the bucket down the client gets
        # an error answer, not headers and a cut body. Not with redirect on:
        # the client is sent to the bucket, and asks it itself.
        if size and not self._redirect and not await self._store.probe(key, url):
            await self._drop(kind, digest)  # gone behind the index's back: fetched again
            yield None
            return
        yield _BucketContent(self._store, self._local, kind, digest, url, size)

    async def read_small(self, kind: ContentKind, digest: Digest) -> bytes | None:
        key = (kind, digest)
        if self.size(kind, digest) is None:
            self._small.discard(key)
            return None
        data = self._small.get(key)
        if data is not None:
            return data
        async with self._local.content.open(kind, digest) as local:
            if local is not None:
                data = b"".join([chunk async for chunk in local.span(0, local.size).pieces()])
                if not await _hashes_to(digest, data):
                    await self._local.content.drop(kind, digest)
                    data = None
        if data is None:
            data = await self._read_from_bucket(kind, digest)
            if data is None:
                return None
            await self._local.put(kind, digest, data)
        self._small.put(key, data)
        return data

    async def _read_from_bucket(self, kind: ContentKind, digest: Digest) -> bytes | None:
        size = self._index.size(kind, digest)
        if size is None:
            return None
        try:
            data = await self._store.read(self._store.key(kind, digest), size)
        except ObjectMissing:
            await self._drop(kind, digest)  # so the next put uploads it again
            return None
        except ObjectStoreError as exc:
            log.warning("cannot read %s %s from the bucket: %s", kind.value, digest, exc)
            return None
        if await _hashes_to(digest, data):
            return data
        await self._drop(kind, digest)
        return None

    def _corrupt(self, digest: Digest) -> None:
        task = asyncio.ensure_future(self._drop(ContentKind.BLOB, digest))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    async def _drop(self, kind: ContentKind, digest: Digest) -> None:
        """Forget content of the bucket that does not hash to its digest, on every replica; it is fetched again.

        Its object is deleted through the janitor's due deletions, so a fill
        of the digest that completes meanwhile is never deleted, and a delete
        that fails is tried again at the next sweep."""
        log.warning("%s %s in the bucket does not match its digest (or is gone); dropping it", kind.value, digest)
        self._small.discard((kind, digest))
        try:
            await self._index.remove([(kind, digest)])
            await self.janitor.delete_due([(kind, digest)])
        except Exception as exc:  # noqa: BLE001 - a later read finds it again, and tries again
            log.warning("cannot drop %s %s: %s", kind.value, digest, exc)

    async def put(self, kind: ContentKind, digest: Digest, data: bytes) -> None:
        # A copy stays on the local tier even when the bucket fails: this replica serves it from there.
        if self._index.size(kind, digest) is None:
            try:
                await self._store.put(self._store.key(kind, digest), data)
                await self._index.add(kind, digest, len(data))
            except ObjectStoreError as exc:
                log.warning("not caching %s %s in the bucket: %s", kind.value, digest, exc)
        await self._local.put(kind, digest, data)
        self._small.put((kind, digest), data)

    async def begin_blob(self, digest: Digest, size: int | None = None) -> S3PartialBlob:
        if size is not None and size > self._max_size:
            # It would go at the next sweep: streamed uncached instead, as on the filesystem.
            raise StorageFull(f"{digest} is larger than cache.max_size")
        try:
            fd, temp = await self._io.run(self._local.layout.temp_file)
        except OSError as exc:
            if StorageFull.caused(exc):
                self._count_full(exc)
                raise StorageFull(exc.errno, f"the cache's disk is full: {exc.strerror}") from None
            raise
        return S3PartialBlob(digest, fd, temp, self._io, store=self._store, on_full=self._count_full,
                             committed=self._committed, max_size=self._max_size)

    async def _committed(self, digest: Digest, size: int, temp: Path) -> None:
        try:
            await self._index.add(ContentKind.BLOB, digest, size)
        except Exception as exc:
            # Complete in the bucket but unlisted: never served, overwritten by the next fill.
            raise OSError(f"recording {digest} in the shared index failed: {exc}") from exc
        await self._local.keep(temp, ContentKind.BLOB, digest, size)

    async def blob_access(self, target: Target, digest: Digest) -> str | None:
        return await self._links.blob_access(target, digest)

    async def link_blob(self, target: Target, digest: Digest, access: str) -> None:
        await self._links.link_blob(target, digest, access)

    async def registry_holds(self, registry: str, digest: Digest) -> bool:
        return await self._links.registry_holds(registry, digest)

    async def manifest_link(self, target: Target, digest: Digest) -> ManifestLink | None:
        return await self._links.manifest(target, digest)

    async def link_manifest(self, target: Target, digest: Digest, link: ManifestLink) -> None:
        await self._links.link_manifest(target, digest, link)

    async def tag(self, target: Target, tag: str) -> TagRecord | None:
        return await self._links.tag(target, tag)

    async def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        await self._links.set_tag(target, tag, record)

    def stats(self) -> CacheStats:
        index = self._index
        return CacheStats(used=index.used, max_size=self._max_size, evictions=self.janitor.evictions,
                          blobs=index.counts[ContentKind.BLOB], manifests=index.counts[ContentKind.MANIFEST],
                          disk_full=self._disk_full + self._local.disk_full, backend="s3",
                          backend_errors=self._store.errors)

    async def check_writable(self) -> None:
        """The local disk only, where downloads are staged: with the bucket down the local tier still serves, so
        the replica stays ready; the bucket's failures are counted in ``backend_errors``."""
        await self._io.run(_probe_write, self._local.layout.tmp)

    async def free_space(self) -> int:
        """Of the local disk, where downloads are staged and the local tier lives."""
        return await self._io.run(self._local.free_space)

    async def verify(self, report: VerifyReport) -> None:
        """Re-hash the bucket's objects, then this replica's local tier (which sets aside what fails, as the
        filesystem cache does)."""
        await verify_bucket(self._index, self._store, report, drop=self._drop)
        await verify_content(self._local.content, self._local.layout, self._io, report,
                             on_removed=lambda kind, digest: self._small.discard((kind, digest)))

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self._index.flush_access()
            except Exception as exc:  # noqa: BLE001 - kept for the next flush
                log.warning("cannot record access times: %s", exc)

    def _count_full(self, exc: BaseException) -> None:
        self._disk_full += 1


async def _hashes_to(digest: Digest, data: bytes) -> bool:
    return await asyncio.to_thread(digest.matches, data)


def _probe_write(directory: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=directory, prefix="ready-") as f:
        f.write(b"ok")
        f.flush()
