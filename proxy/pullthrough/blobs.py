"""Blobs: served from the cache, or streamed from upstream to every waiting client at once.

On a miss one task fetches the blob into a temp file; every client asking for
it meanwhile tails that file as it grows, so 20 concurrent pulls make one
upstream request and all of them stream from the first byte on. The last byte
is held back until the digest is verified: a client never receives a
complete body that turns out to be wrong; its connection is cut instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from proxy.errors import ErrorCode, RegistryError
from proxy.reference import Digest, Target
from proxy.storage.content import ContentStore
from proxy.storage.index import RepositoryIndex
from proxy.upstream.client import UpstreamClient

__all__ = ["BlobBody", "BlobService", "BlobStreamError"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class BlobStreamError(Exception):
    """The body cannot be completed; the client's connection must be aborted."""


class BlobBody(Protocol):
    size: int | None
    source: str

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...


@dataclass
class _CachedBody:
    fd: int
    size: int | None
    source: str = "hit"

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        end = self.size if end is None else end
        assert end is not None
        pos = start
        while pos < end:
            chunk = await asyncio.to_thread(os.pread, self.fd, min(CHUNK, end - pos), pos)
            if not chunk:
                raise BlobStreamError("cached blob shorter than recorded")
            pos += len(chunk)
            yield chunk


class _Fetch:
    """One upstream download in progress, shared by every reader of it."""

    def __init__(self, temp_path: Path) -> None:
        self.temp_path = temp_path
        self.size: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self._progress = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def advance(self, count: int) -> None:
        self.written += count
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.done, self.error = True, error
        if not self.size.done():
            self.size.set_exception(error or RegistryError(ErrorCode.UNKNOWN, "blob fetch ended early"))
            self.size.exception()  # retrieved here so an unread failure is not logged as lost
        self._wake()

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def tail(self, fd: int, start: int, end: int | None) -> AsyncIterator[bytes]:
        pos = start
        while True:
            progress = self._progress
            if self.error is not None:
                raise BlobStreamError(str(self.error))
            # Until verified, one byte stays back so no reader can finish a bad
            # body; for a range, the range's own last byte waits too.
            readable = self.written if self.done else max(0, self.written - 1)
            limit = readable if end is None else min(end if self.done else end - 1, readable)
            if pos < limit:
                chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, limit - pos), pos)
                pos += len(chunk)
                yield chunk
            elif self.done and (end is None or pos >= end):
                return
            else:
                await progress.wait()


@dataclass
class _FetchBody:
    fetch: _Fetch
    fd: int
    size: int | None
    source: str

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.fetch.tail(self.fd, start, end)


class BlobService:
    def __init__(self, *, store: ContentStore, index: RepositoryIndex, upstream: UpstreamClient) -> None:
        self._store = store
        self._index = index
        self._upstream = upstream
        self._fetches: dict[tuple[Target, Digest], _Fetch] = {}
        self.joins = 0

    @property
    def in_flight(self) -> int:
        return len(self._fetches)

    async def stat(self, target: Target, digest: Digest) -> tuple[int | None, str]:
        """Size for a HEAD, answered locally whenever the cache can."""
        size = await self._local_size(target, digest)
        if size is not None:
            return size, "hit"
        async with self._upstream.open(target, "HEAD", f"blobs/{digest}", kind="blob") as resp:
            return resp.content_length, "miss"

    @contextlib.asynccontextmanager
    async def open(self, target: Target, digest: Digest) -> AsyncIterator[BlobBody]:
        if await self._local_size(target, digest) is not None:
            with self._store.open(digest) as opened:
                if opened is not None:
                    f, size = opened
                    yield _CachedBody(f.fileno(), size)
                    return
        key = (target, digest)
        fetch = self._fetches.get(key)
        source = "joined"
        if fetch is None:
            fetch, source = self._start(target, digest), "miss"
        else:
            self.joins += 1
        # Opened before any await, while the fetch cannot yet have renamed it.
        try:
            fd = os.open(fetch.temp_path, os.O_RDONLY)
        except FileNotFoundError:
            # The fetch failed and removed its file a moment ago: its error
            # (if it failed before its headers) is the answer.
            await fetch.size
            raise RegistryError(ErrorCode.UNKNOWN, f"fetching {digest} from {target.registry} failed; "
                                "try again") from None
        try:
            expected = await fetch.size
            yield _FetchBody(fetch, fd, expected, source)
        finally:
            os.close(fd)

    async def _local_size(self, target: Target, digest: Digest) -> int | None:
        size = self._store.size(digest)
        if size is None:
            return None
        access = self._upstream.access_key(target.registry)
        if self._index.blob_access(target, digest) != access:
            # The content is here, but was seen for another repository or with
            # other credentials. Whether it may be served now is for the
            # upstream to say, so ask it first.
            async with self._upstream.open(target, "HEAD", f"blobs/{digest}", kind="blob"):
                pass
            self._index.link_blob(target, digest, access)
        return size

    def _start(self, target: Target, digest: Digest) -> _Fetch:
        fd, temp = self._store.layout.temp_file()
        fetch = _Fetch(temp)
        key = (target, digest)
        self._fetches[key] = fetch
        fetch.task = asyncio.ensure_future(self._run(fetch, fd, target, digest))
        fetch.task.add_done_callback(lambda _: self._fetches.pop(key, None))
        return fetch

    async def _run(self, fetch: _Fetch, fd: int, target: Target, digest: Digest) -> None:
        access = self._upstream.access_key(target.registry)
        try:
            async with self._upstream.open(target, "GET", f"blobs/{digest}", kind="blob") as resp:
                expected = resp.content_length
                fetch.size.set_result(expected)
                hasher = digest.hasher()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    # In a thread: a slow disk must not stall every other request.
                    await asyncio.to_thread(_write_all, fd, chunk)
                    hasher.update(chunk)
                    fetch.advance(len(chunk))
            if expected is not None and fetch.written != expected:
                raise RegistryError(ErrorCode.UNKNOWN,
                                    f"upstream {target.registry} sent {fetch.written} of {expected} bytes for {digest}")
            if hasher.hexdigest() != digest.hex:
                raise RegistryError(ErrorCode.DIGEST_INVALID,
                                    f"upstream {target.registry} sent content that does not match {digest}")
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
            fd = -1
            self._store.commit(fetch.temp_path, digest, fetch.written)
            self._index.link_blob(target, digest, access)
            fetch.finish()
        except BaseException as exc:
            log.warning("fetch of %s from %s failed: %s", digest, target, exc)
            fetch.finish(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if fd >= 0:
                os.close(fd)
            if fetch.error is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fetch.temp_path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
