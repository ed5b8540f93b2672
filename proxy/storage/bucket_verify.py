"""Re-hashing what the bucket holds, while serving: every object the shared index lists, read back and hashed.

Objects are read as clients read them (a presigned GET, a piece at a time,
hashed in a thread), two at a time. One that does not hash to its digest is
dropped on every replica, row and object, and fetched again on the next
request; there is no quarantine in a bucket shared by replicas. One the
bucket no longer has is forgotten the same way. A bucket that fails to
answer ends the run with its error rather than condemn what it could not read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

from proxy.reference import Digest
from proxy.storage.base import ContentKind, VerifyReport
from proxy.storage.objects import ObjectMissing, ObjectStore
from proxy.storage.shared_index import SharedIndex
from proxy.storage.verify import PARALLEL

__all__ = ["verify_bucket"]

log = logging.getLogger(__name__)

_URL_EXPIRY = 60 * 60

Drop = Callable[[ContentKind, Digest], Awaitable[None]]


async def verify_bucket(index: SharedIndex, store: ObjectStore, report: VerifyReport, *, drop: Drop) -> None:
    """Check every object the index lists now; ``drop`` forgets one that failed, everywhere."""
    listing = index.listing()
    report.objects += len(listing)
    queue = iter(listing)
    await asyncio.gather(*(_work(queue, index, store, report, drop) for _ in range(PARALLEL)))


async def _work(queue: Iterator[tuple[ContentKind, Digest, int]], index: SharedIndex, store: ObjectStore,
                report: VerifyReport, drop: Drop) -> None:
    for kind, digest, size in queue:
        if not index.holds(kind, digest):
            report.skipped += 1  # evicted meanwhile
            continue
        key = store.key(kind, digest)
        url = await store.presign(key, _URL_EXPIRY)
        hasher = digest.hasher()
        try:
            async for chunk in store.range(key, url, 0, size).pieces():
                await asyncio.to_thread(hasher.update, chunk)
                report.bytes += len(chunk)
        except ObjectMissing:
            log.warning("%s %s is gone from the bucket; it will be fetched again", kind.value, digest)
            report.missing += 1
            await drop(kind, digest)
            continue
        report.checked += 1
        if hasher.hexdigest() != digest.hex:
            report.mismatched += 1
            await drop(kind, digest)
