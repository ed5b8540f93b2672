"""One upstream download of a blob in progress, shared by every reader of it.

What arrives goes three ways at once, none waiting on another:

- to readers at the head of the download, straight from memory: only what
  was received but is not stored yet is held there, at most ``AHEAD`` bytes;
- to a writer task that stores and hashes it, every chunk that queued up
  meanwhile at once, in two worker threads side by side (one writes, one
  hashes), so the next bytes are received while the last ones are stored;
- to readers behind the head, from the temp file as ``FileRange`` pieces,
  which connections send by ``sendfile``: a reader costs no memory of its own.

The last byte (of a range: its own last byte) is held back until the digest
is verified and the blob is in the cache: a client never receives a
complete body that turns out to be wrong (its connection is cut instead),
and whoever sees a response end finds the blob cached.

A download the cache cannot take (its disk is full, or the blob does not
fit under ``cache.max_size``) goes on uncached: the writer only hashes, and
readers past what the file holds follow a window in memory, which the
download lets grow to ``WINDOW`` bytes past the slowest reader before it
waits for that reader. A request that comes once the window has moved past
what the file holds is not ``joinable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Callable

from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller
from proxy.reference import Target
from proxy.storage.base import Body, FileRange, PartialBlob, StorageFull
from proxy.storage.files import PIECE

__all__ = ["AHEAD", "WINDOW", "BlobStreamError", "Download", "Piece"]

# Received but not yet stored: the memory a download may hold when its disk is slower than the network.
AHEAD = 16 * 1024 * 1024
# How far an uncached download may run ahead of its slowest reader.
WINDOW = 8 * 1024 * 1024

# Bytes from memory, a range of a local file, or a range read from object storage as it is sent.
Piece = bytes | memoryview | FileRange | Body


class BlobStreamError(Exception):
    """The body cannot be completed; the client's connection must be aborted."""


class Download:
    def __init__(self, target: Target, caller: Caller) -> None:
        self.target = target
        self.caller = caller
        self.size: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._expected: int | None = None
        self.partial: PartialBlob | None = None
        self.received = 0
        self.stored = 0  # hashed, and in the file unless uncached
        self.file_end = 0  # what readers may take from the file
        self.done = False  # over: every byte is verified and in the cache (or kept out of it), or it failed
        self.error: BaseException | None = None
        self.uncached = False
        # The download itself holds it too; the partial blob closes with the last holder.
        self._holders = 1
        self.readers = 0
        self._chunks: deque[bytes] = deque()
        self._memory_start = 0
        self._queued: list[bytes] = []
        self._hasher: hashlib._Hash | None = None
        self._on_uncached: Callable[[StorageFull], None] = lambda exc: None
        self._writer: asyncio.Task[None] | None = None
        self._input_ended = False
        self._progress = asyncio.Event()  # readers: there is more to read
        self._moved = asyncio.Event()  # the download: the writer or a reader moved on
        self._work = asyncio.Event()  # the writer: there is more to store
        self._positions: dict[object, int] = {}

    def vouches_for(self, target: Target, caller: Caller) -> bool:
        return (target, caller.access) == (self.target, self.caller.access)

    @property
    def joinable(self) -> bool:
        """Whether a reader arriving now can still read every byte: memory has not moved past the file."""
        return self._memory_start <= self.file_end

    def hold(self) -> None:
        self._holders += 1
        self.readers += 1

    def release(self) -> None:
        self.readers -= 1
        self._trim()
        self._let_go()

    def download_ended(self) -> None:
        self._let_go()

    def _let_go(self) -> None:
        self._holders -= 1
        if self._holders == 0 and self.partial is not None:
            self.partial.close()

    # The download's side.

    def begin(self, expected: int | None, partial: PartialBlob | None, hasher: hashlib._Hash,
              on_uncached: Callable[[StorageFull], None]) -> None:
        """Start storing into ``partial``; with None, the blob is streamed uncached and only hashed.

        Readers waiting for the size (the upstream's Content-Length) get it now.
        """
        self._expected = expected
        self.size.set_result(expected)
        self.partial = partial
        self._on_uncached = on_uncached
        if partial is None:
            self._hasher, self.uncached = hasher, True
        self._writer = asyncio.ensure_future(self._write())

    async def receive(self, chunk: bytes) -> None:
        """Take the next bytes; returns once there is room for more, raises if storing them failed."""
        self._chunks.append(chunk)
        self._queued.append(chunk)
        self.received += len(chunk)
        self._work.set()
        self._wake()
        while True:
            self._raise_write_error()
            held = self.received - self._memory_start
            if self.received - self.stored <= AHEAD and (not self.uncached or not self.readers or held <= WINDOW):
                return
            self._moved.clear()
            await self._moved.wait()

    async def received_all(self) -> None:
        """Wait until everything received is stored and hashed."""
        self._input_ended = True
        self._work.set()
        assert self._writer is not None
        await asyncio.shield(self._writer)

    def matches(self, hex_digest: str) -> bool:
        if self._hasher is not None:
            return self._hasher.hexdigest() == hex_digest
        assert self.partial is not None
        return self.partial.matches()

    def finish(self, error: BaseException | None = None) -> None:
        if error is not None and not isinstance(error, Exception):
            # The download was stopped (shutdown); its readers were not, and must not end as if cancelled.
            error = RegistryError(ErrorCode.UNAVAILABLE, "the proxy is shutting down")
        if error is not None:
            self.error = error
        self.done = True
        if not self.size.done():
            self.size.set_exception(error or RegistryError(ErrorCode.UNKNOWN, "blob fetch ended early"))
            self.size.exception()  # retrieved here so an unread failure is not logged as lost
        self._wake()

    async def stop_writing(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer

    def _raise_write_error(self) -> None:
        if self._writer is not None and self._writer.done() and not self._writer.cancelled():
            error = self._writer.exception()
            if error is not None:
                raise error

    async def _write(self) -> None:
        try:
            while True:
                if not self._queued:
                    if self._input_ended:
                        return
                    self._work.clear()
                    await self._work.wait()
                    continue
                batch, self._queued = self._queued, []
                await self._store(batch)
                self.stored += sum(map(len, batch))
                if not self.uncached:
                    self.file_end = self.stored
                self._trim()
                self._wake()
        finally:
            self._moved.set()

    async def _store(self, batch: list[bytes]) -> None:
        if self._hasher is None:
            assert self.partial is not None
            try:
                await self.partial.append(batch)
                return
            except StorageFull as exc:
                self._hasher = await self.partial.uncache()
                self.uncached, self.file_end = True, self.partial.written
                self._on_uncached(exc)
                # What of the batch was hashed already is not hashed again.
                batch = [b"".join(batch)[self.partial.hashed - self.stored:]]
        await asyncio.to_thread(_hash_all, self._hasher, batch)

    # The readers' side.

    async def tail(self, start: int, end: int | None) -> AsyncIterator[Piece]:
        me = object()
        self._positions[me] = start
        try:
            position = start
            while True:
                progress = self._progress
                if self.error is not None:
                    raise BlobStreamError(str(self.error))
                # Until verified, the last byte stays back so no reader can finish
                # a bad body; for a range, the range's own last byte waits too.
                readable = self.received if self.done or self._short_of_size() else max(0, self.received - 1)
                limit = readable if end is None else min(end if self.done else end - 1, readable)
                if position < limit:
                    piece = self._piece(position, limit)
                    position += piece.count if isinstance(piece, FileRange) else len(piece)
                    self._positions[me] = position
                    self._trim()
                    yield piece
                elif self.done and (end is None or position >= end):
                    return
                else:
                    # A reader waiting ahead of the download holds back nothing it has not reached.
                    self._trim()
                    await progress.wait()
        finally:
            del self._positions[me]
            self._trim()

    def _short_of_size(self) -> bool:
        """Whether the last byte is still to come: everything so far may go (without a size, nothing says so)."""
        return self._expected is not None and self.received < self._expected

    def _piece(self, position: int, limit: int) -> bytes | memoryview | FileRange:
        # The file where it holds the position and a worthwhile run of bytes
        # from it (or memory has moved on); memory at the head.
        if position < self.file_end and (position < self._memory_start or self.file_end - position >= PIECE):
            assert self.partial is not None
            return self.partial.span(position, min(limit, self.file_end))
        offset = position - self._memory_start
        for chunk in self._chunks:
            if offset < len(chunk):
                return memoryview(chunk)[offset:offset + min(PIECE, limit - position)]
            offset -= len(chunk)
        raise BlobStreamError(f"byte {position} is neither in memory nor in the file")

    def _trim(self) -> None:
        """Let go of memory that no reader needs from it any more."""
        if self.uncached:
            # A holder that has not started reading yet may need every byte; memory holds until it starts.
            if len(self._positions) < self.readers:
                return
            # Never past what was received: a reader ahead of the download (a range) needs what is still to come.
            low = min(min((max(p, self.file_end) for p in self._positions.values()), default=self.received),
                      self.received)
        else:
            low = self.file_end
        while self._chunks and self._memory_start + len(self._chunks[0]) <= low:
            self._memory_start += len(self._chunks.popleft())
        self._moved.set()

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()


def _hash_all(hasher: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
