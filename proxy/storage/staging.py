"""A blob download's temp file: stored and hashed at once, read by the readers that follow it while it grows.

The storages build their partial blobs on it and differ in how one becomes
content: the filesystem cache renames the file into place, the S3 one
completes an upload of it. Its bytes count against a ``Budget`` while it
exists, and a disk that fills up raises ``StorageFull``, so the download goes
on uncached.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from proxy.reference import Digest
from proxy.storage.base import StorageFull
from proxy.storage.files import FileRange, IoPool, SharedFd, pwrite_all, start_writeback

__all__ = ["Budget", "StagedBlob"]

# Written bytes are sent on to the disk in runs of this much (see ``start_writeback``).
_WRITEBACK = 8 * 1024 * 1024


class Budget(Protocol):
    """Room that downloads in progress reserve before they write (``ContentStore`` is one)."""

    async def reserve(self, size: int) -> None: ...

    def release(self, size: int) -> None: ...


class StagedBlob:
    def __init__(self, digest: Digest, fd: int, temp: Path, budget: Budget, io: IoPool, *,
                 reserved: int, on_full: Callable[[BaseException], None]) -> None:
        self._digest = digest
        self._fd = SharedFd(fd, io)
        self._temp = temp
        self._budget = budget
        self._io = io
        self._hasher = digest.hasher()
        self._reserved = reserved
        self._on_full = on_full
        self.written = 0
        self.hashed = 0
        self._unsynced = 0  # from here on, not yet on its way to the disk

    async def append(self, chunks: Sequence[bytes]) -> None:
        def write(fd: int) -> None:
            # ``written`` moves chunk by chunk: after a failure it says what is stored.
            for chunk in chunks:
                pwrite_all(fd, chunk, self.written)
                self.written += len(chunk)
            if self.written - self._unsynced >= _WRITEBACK:
                start_writeback(fd, self._unsynced, self.written - self._unsynced)
                self._unsynced = self.written

        def hash_all() -> None:
            for chunk in chunks:
                self._hasher.update(chunk)
            self.hashed += sum(map(len, chunks))

        more = self.written + sum(map(len, chunks)) - self._reserved
        if more > 0:
            await self._budget.reserve(more)
            self._reserved += more
        # Two threads at once: hashing releases the GIL as writing does, so
        # neither waits for the other, and neither holds up the event loop.
        written, hashed = await asyncio.gather(self._fd.use(write), self._io.run(hash_all), return_exceptions=True)
        if isinstance(hashed, BaseException):
            raise hashed
        if isinstance(written, OSError):
            if StorageFull.caused(written):
                self._on_full(written)
                raise StorageFull(written.errno, f"the cache's disk is full: {written.strerror}") from None
            raise written
        if isinstance(written, BaseException):
            raise written

    async def uncache(self) -> hashlib._Hash:
        # The descriptor keeps what was written readable; the name and the reservation go now.
        self._budget.release(self._reserved)
        self._reserved = 0
        await self._io.run(self._temp.unlink, missing_ok=True)
        return self._hasher

    def span(self, start: int, end: int) -> FileRange:
        return FileRange(self._fd, start, end - start, resident=True)

    def matches(self) -> bool:
        return self._hasher.hexdigest() == self._digest.hex

    def close(self) -> None:
        self._fd.release()

    async def discard(self) -> None:
        self._budget.release(self._reserved)
        self._reserved = 0
        await self._io.run(self._temp.unlink, missing_ok=True)
