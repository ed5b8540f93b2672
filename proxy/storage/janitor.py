"""Keeping the bucket within ``cache.max_size`` and free of abandoned uploads, one replica at a time.

A sweep runs at start and then periodically on every replica, but only the
one that takes the advisory lock "evict" does the work; the others skip that
round. It

- evicts by least recent access (the replicas' batched access times, this
  one's flushed first) down to ``cache.max_size``, sparing content used
  within the last two flushes (other replicas may not have written that
  use yet). The rows go at once, so no replica hands the content out any
  more; the objects only once a grace period has passed (``shared_index``),
  so redirects and reads already under way finish;
- deletes the objects whose deletion is due, evicted or dropped, and still
  unclaimed: a blob's under its fill lock, so no fill of the same digest can
  complete its upload meanwhile. One that fails stays due, and the next
  sweep tries again;
- aborts multipart uploads that nobody is filling: a replica that died
  mid-fill lost its session, and with it the fill lock of the digest, so a
  lock that can be taken means the upload is abandoned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from proxy.postgres.locks import lock_key
from proxy.reference import Digest, InvalidReference, parse_digest
from proxy.storage.base import ContentKind
from proxy.storage.objects import ObjectStore, ObjectStoreError
from proxy.storage.shared_index import SharedIndex

if TYPE_CHECKING:
    from proxy.postgres.locks import SessionLocks

__all__ = ["Janitor", "fill_lock"]

log = logging.getLogger(__name__)

_EVICT = lock_key("evict")
# Due deletions handled per round trip to the bucket.
_BATCH = 500


def fill_lock(digest: Digest) -> int:
    """The advisory lock a replica holds while it downloads ``digest`` into the bucket."""
    return lock_key(f"fill:{digest}")


class Janitor:
    def __init__(self, *, index: SharedIndex, store: ObjectStore, locks: SessionLocks, max_size: int,
                 flush: Callable[[], Awaitable[None]], grace: float, recent: float) -> None:
        """``grace``: seconds from eviction to the object's deletion; ``recent``: uses this young are spared."""
        self._index = index
        self._store = store
        self._locks = locks
        self._max_size = max_size
        self._flush = flush
        self._grace = grace
        self._recent = recent
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
            await self.delete_due()
            await self._abort_abandoned()
        finally:
            await self._locks.unlock(_EVICT)
        return True

    async def _evict(self) -> None:
        await self._flush()
        gone = await self._index.evict(self._max_size, grace=self._grace, recent=self._recent)
        if not gone:
            return
        self.evictions += len(gone)
        log.info("evicted %d objects from the bucket, least recently used first, to stay within cache.max_size (%d)",
                 len(gone), self._max_size)

    async def delete_due(self, among: Sequence[tuple[ContentKind, Digest]] | None = None) -> None:
        """Delete the objects whose deletion is due (of ``among`` only, if given); a failure leaves them due."""
        keys = None if among is None else list(among)
        while True:
            due = await self._index.due_deletions(_BATCH, keys)
            held: set[int] = set()
            try:
                for kind, digest in due:
                    if kind is ContentKind.BLOB:
                        if not await self._locks.try_lock(fill_lock(digest)):
                            continue  # being filled again: its commit cancels the deletion
                        held.add(fill_lock(digest))
                # Under the locks no blob among them can be added any more: look again.
                claimed = [key for key in due if key[0] is not ContentKind.BLOB or fill_lock(key[1]) in held]
                sure = await self._index.due_deletions(_BATCH, claimed) if claimed else []
                if sure:
                    await self._store.delete([self._store.key(kind, digest) for kind, digest in sure])
                    await self._index.deleted(sure)
            except ObjectStoreError as exc:
                log.warning("objects to delete stay in the bucket until the next sweep: %s", exc)
                return
            finally:
                for key in held:
                    await self._locks.unlock(key)
            # Another batch only after a whole one went: what was skipped waits for the next sweep.
            if keys is not None or len(sure) < _BATCH:
                return

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
