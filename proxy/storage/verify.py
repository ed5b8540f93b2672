"""Re-hashing the cache while it serves: every blob and manifest checked against its digest.

It runs inside the serving proxy, so the accounting stays true. Each object
is leased while it is hashed (eviction skips it) and hashed from a
descriptor of its own, one chunk per hop to the storage's I/O threads, two
objects at a time, so pulls keep their share of those threads. An object
that does not hash to its digest is moved to ``quarantine/`` and forgotten:
it is never served again, and the next request fetches it afresh. One that
was evicted or replaced meanwhile is skipped, never moved.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from proxy.reference import Digest
from proxy.storage.base import ContentKind, VerifyReport
from proxy.storage.content import ContentStore
from proxy.storage.files import IoPool, SharedFd
from proxy.storage.layout import Layout

__all__ = ["PARALLEL", "verify_content"]

_CHUNK = 1024 * 1024

log = logging.getLogger(__name__)

# Objects hashed at once: at most this many of the I/O threads are busy with it.
PARALLEL = 2


async def verify_content(content: ContentStore, layout: Layout, io: IoPool, report: VerifyReport, *,
                         on_removed: Callable[[ContentKind, Digest], None]) -> None:
    """Check everything the cache holds now; ``on_removed`` hears of each object no longer to be served."""
    listing = content.listing()
    report.objects += len(listing)
    queue = iter(listing)
    checker = _Checker(content, layout, io, report, on_removed)
    try:
        await asyncio.gather(*(checker.work(queue) for _ in range(PARALLEL)))
    finally:
        report.finished = time.time()
    log.info("cache verified: %d objects, %d bytes, %d mismatched, %d missing or unreadable, %d skipped in %.1fs",
             report.checked, report.bytes, report.mismatched, report.missing, report.skipped,
             report.finished - report.started)


class _Checker:
    def __init__(self, content: ContentStore, layout: Layout, io: IoPool, report: VerifyReport,
                 on_removed: Callable[[ContentKind, Digest], None]) -> None:
        self._content = content
        self._layout = layout
        self._io = io
        self._report = report
        self._on_removed = on_removed

    async def work(self, queue: Iterator[tuple[ContentKind, Digest]]) -> None:
        for kind, digest in queue:
            await self._check(kind, digest)

    async def _check(self, kind: ContentKind, digest: Digest) -> None:
        report = self._report
        with self._content.lease(kind, digest) as expected:
            if expected is None:
                report.skipped += 1
                return
            path = self._layout.content(kind, digest)
            try:
                fd = await self._io.run(os.open, path, os.O_RDONLY)
            except FileNotFoundError:
                log.warning("cached %s %s is gone from the disk; it will be fetched again", kind.value, digest)
                self._remove(kind, digest, missing=True)
                return
            except OSError as exc:
                log.warning("cached %s %s cannot be opened (%s); it will be fetched again", kind.value, digest, exc)
                self._remove(kind, digest, missing=True)
                return
            shared = SharedFd(fd, self._io)
            try:
                try:
                    matches = await self._hashes_to(shared, digest, expected)
                except OSError as exc:
                    log.warning("cached %s %s cannot be read (%s); it will be fetched again", kind.value, digest, exc)
                    matches = None
                if matches:
                    report.checked += 1
                    return
                target = self._layout.quarantined(kind, digest)
                moved = await shared.use(lambda held: _set_aside(held, path, target))
            finally:
                shared.release()
            if moved is None:
                # Evicted or replaced by a fresh copy while it was read: not ours to move.
                report.skipped += 1
                return
            if matches is None:
                self._remove(kind, digest, missing=True)
                return
            report.checked += 1
            report.mismatched += 1
            report.quarantined += moved
            log.warning("cached %s %s does not match its digest; %s, and it will be fetched again", kind.value,
                        digest, f"moved to {target}" if moved else "removed")
            self._remove(kind, digest, missing=False)

    async def _hashes_to(self, shared: SharedFd, digest: Digest, expected: int) -> bool:
        size = await shared.use(lambda fd: os.fstat(fd).st_size)
        if size != expected:
            return False
        hasher = digest.hasher()
        position = 0
        while position < size:
            read = await shared.use(functools.partial(_hash_chunk, hasher=hasher, position=position))
            if not read:
                return False
            position += read
            self._report.bytes += read
        return hasher.hexdigest() == digest.hex

    def _remove(self, kind: ContentKind, digest: Digest, *, missing: bool) -> None:
        if missing:
            self._report.missing += 1
        self._content.forget(kind, digest)
        self._on_removed(kind, digest)


def _hash_chunk(fd: int, hasher: hashlib._Hash, position: int) -> int:
    chunk = os.pread(fd, _CHUNK, position)
    hasher.update(chunk)  # in the same thread hop: hashing releases the GIL
    return len(chunk)


def _set_aside(fd: int, path: Path, target: Path) -> bool | None:
    """Move the file read through ``fd`` to ``target``: True if moved, False if it had to be deleted, None if
    ``path`` no longer is that file. Blocking."""
    held = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return None
    if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return True
    except OSError as exc:
        log.warning("cannot move %s to %s (%s); deleting it instead", path, target, exc)
        path.unlink(missing_ok=True)
        return False
