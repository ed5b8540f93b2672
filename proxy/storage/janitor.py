"""Keeping the bucket within ``cache.max_size`` and free of abandoned uploads, one replica at a time.

A sweep runs at start and then periodically on every replica, but only the
one that takes the advisory lock "evict" does the work; the others skip that
round. It

- evicts by least recent access (the replicas' batched access times, this
  one's flushed first) down to ``cache.max_size``: the rows go first, so no
  replica serves the content any more, then the objects;
- aborts multipart uploads that nobody is filling: a replica that died
  mid-fill lost its session, and with it the fill lock of the digest, so a
  lock that can be taken means the upload is abandoned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from proxy.postgres.locks import lock_key
from proxy.reference import Digest, InvalidReference, parse_digest
from proxy.storage.objects import ObjectStore, ObjectStoreError
from proxy.storage.shared_index import SharedIndex

if TYPE_CHECKING:
    from proxy.postgres.locks import SessionLocks

__all__ = ["Janitor", "fill_lock"]

log = logging.getLogger(__name__)

_EVICT = lock_key("evict")


def fill_lock(digest: Digest) -> int:
    """The advisory lock a replica holds while it downloads ``digest`` into the bucket."""
    return lock_key(f"fill:{digest}")


class Janitor:
    def __init__(self, *, index: SharedIndex, store: ObjectStore, locks: SessionLocks, max_size: int,
                 flush: Callable[[], Awaitable[None]]) -> None:
        self._index = index
        self._store = store
        self._locks = locks
        self._max_size = max_size
        self._flush = flush
        self.evictions = 0
        self.aborted = 0

    async def run(self, interval: float) -> None:
        """Sweep now and every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("cache janitor: %s", exc)
            await asyncio.sleep(interval)

    async def sweep(self) -> bool:
        """One round, if no other replica's is running; whether this one ran."""
        if not await self._locks.try_lock(_EVICT):
            return False
        try:
            await self._evict()
            await self._abort_abandoned()
        finally:
            await self._locks.unlock(_EVICT)
        return True

    async def _evict(self) -> None:
        await self._flush()
        gone = await self._index.evict(self._max_size)
        if not gone:
            return
        self.evictions += len(gone)
        log.info("evicted %d objects from the bucket, least recently used first, to stay within cache.max_size (%d)",
                 len(gone), self._max_size)
        try:
            await self._store.delete([self._store.key(kind, digest) for kind, digest in gone])
        except ObjectStoreError as exc:
            # Unlisted, so never served; a later fill of the digest overwrites the object.
            log.warning("evicted objects stay in the bucket: %s", exc)

    async def _abort_abandoned(self) -> None:
        for upload in await self._store.uploads():
            digest = self._digest_of(upload.key)
            if digest is None:
                continue
            lock = fill_lock(digest)
            if not await self._locks.try_lock(lock):
                continue  # a replica (this one too: the locks are not reentrant) is filling it
            try:
                await self._store.abort_upload(upload.key, upload.upload_id)
                self.aborted += 1
                log.info("aborted an abandoned upload of %s", digest)
            except ObjectStoreError as exc:
                log.warning("cannot abort an abandoned upload of %s: %s", digest, exc)
            finally:
                await self._locks.unlock(lock)

    def _digest_of(self, key: str) -> Digest | None:
        folder, _, rest = key.removeprefix(self._store.prefix).partition("/")
        algorithm, _, hex_digest = rest.partition("/")
        if folder != "blobs":
            return None
        try:
            return parse_digest(f"{algorithm}:{hex_digest}")
        except InvalidReference:
            return None
