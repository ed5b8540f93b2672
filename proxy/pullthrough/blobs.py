"""Blobs: served from the cache, or streamed from upstream to every waiting client at once.

One download per digest, whichever repository of a registry asks. Every
client asking for it meanwhile reads the partial blob as it grows, so 20
concurrent pulls make one upstream request and all of them stream from the
first byte on. A request through another repository (or with other
credentials) than the download's first asks the upstream whether it may read
the blob, with its own access, before it follows along; a request through
another registry fetches the blob from that registry. The last byte is held back until the
digest is verified: a client never receives a complete body that turns out
to be wrong; its connection is cut instead.

A blob the cache cannot take (its disk is full, or it does not fit under
``cache.max_size`` beside what is read and downloaded meanwhile) is streamed
uncached: from then on its readers follow a bounded window in memory, and
the download waits for the slowest of them. It is verified all the same. A
request that comes once the window has moved past what the file holds
downloads the blob for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.pullthrough.ports import STALE_OK, CacheResult, Upstream
from proxy.reference import Digest, Target
from proxy.singleflight import SingleFlight
from proxy.storage.base import Content, ContentKind, DigestMismatch, PartialBlob, Storage, StorageFull
from proxy.upstream.endpoints import EndpointKind

__all__ = ["BlobBody", "BlobService", "BlobStreamError"]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# How far an uncached download may run ahead of its slowest reader.
WINDOW = 8 * CHUNK


class BlobStreamError(Exception):
    """The body cannot be completed; the client's connection must be aborted."""


class BlobBody(Protocol):
    @property
    def size(self) -> int | None: ...

    @property
    def result(self) -> CacheResult: ...

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...


@dataclass
class _CachedBody:
    content: Content
    result: CacheResult = CacheResult.HIT

    @property
    def size(self) -> int:
        return self.content.size

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.content.read(start, self.size if end is None else end):
                yield chunk
        except OSError as exc:
            raise BlobStreamError(str(exc)) from None


class _Fetch:
    """One upstream download in progress, shared by every reader of it."""

    def __init__(self, target: Target, caller: Caller) -> None:
        self.target = target
        self.caller = caller
        self.size: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.partial: PartialBlob | None = None
        self.written = 0
        self.done = False
        self.error: BaseException | None = None
        self._progress = asyncio.Event()
        # The download itself holds it too; the partial blob closes with the last holder.
        self._holders = 1
        self.readers = 0
        # Uncached: bytes from ``file_end`` on are in ``_window``, which starts at ``_window_start``.
        self.uncached = False
        self.file_end = 0
        self._window = bytearray()
        self._window_start = 0
        self._positions: dict[object, int] = {}
        self._drained = asyncio.Event()

    def vouches_for(self, target: Target, caller: Caller) -> bool:
        return (target, caller.access) == (self.target, self.caller.access)

    @property
    def joinable(self) -> bool:
        """Whether a reader arriving now can still read every byte: the window has not moved past the file."""
        return self._window_start <= self.file_end

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

    def stop_caching(self) -> None:
        """From now on, bytes past ``written`` go to readers through memory, not the file."""
        self.uncached = True
        self.file_end = self._window_start = self.written

    def add_uncached(self, chunk: bytes) -> None:
        self._window += chunk
        self.written += len(chunk)

    async def drained(self) -> None:
        """Wait until the slowest reader is within ``WINDOW`` of the download, or no reader is left."""
        while len(self._window) > WINDOW and self.readers:
            self._drained.clear()
            await self._drained.wait()

    def _trim(self) -> None:
        # A holder that has not started reading yet may need every byte; the window holds until it starts.
        if not self.uncached or len(self._positions) < self.readers:
            return
        # Never past what was written: a reader ahead of the download (a range) needs what is still to come.
        low = min(min((max(p, self.file_end) for p in self._positions.values()), default=self.written), self.written)
        if low > self._window_start:
            del self._window[:low - self._window_start]
            self._window_start = low
        self._drained.set()

    async def _read(self, position: int, size: int) -> bytes:
        if position >= self.file_end and self.uncached:
            offset = position - self._window_start
            return bytes(self._window[offset:offset + size])
        assert self.partial is not None
        return await self.partial.read(position, min(size, self.file_end - position) if self.uncached else size)

    def advance(self) -> None:
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        if error is not None and not isinstance(error, Exception):
            # The download was stopped (shutdown); its readers were not, and must not end as if cancelled.
            error = RegistryError(ErrorCode.UNAVAILABLE, "the proxy is shutting down")
        self.done, self.error = True, error
        if not self.size.done():
            self.size.set_exception(error or RegistryError(ErrorCode.UNKNOWN, "blob fetch ended early"))
            self.size.exception()  # retrieved here so an unread failure is not logged as lost
        self._wake()

    def _wake(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def tail(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        me = object()
        self._positions[me] = start
        try:
            async for chunk in self._tail(me, start, end):
                yield chunk
        finally:
            del self._positions[me]
            self._trim()

    async def _tail(self, me: object, start: int, end: int | None) -> AsyncIterator[bytes]:
        position = start
        while True:
            progress = self._progress
            if self.error is not None:
                raise BlobStreamError(str(self.error))
            # Until verified, one byte stays back so no reader can finish a bad
            # body; for a range, the range's own last byte waits too.
            written = self.written
            readable = written if self.done else max(0, written - 1)
            limit = readable if end is None else min(end if self.done else end - 1, readable)
            if position < limit:
                chunk = await self._read(position, min(CHUNK, limit - position))
                if not chunk:
                    raise BlobStreamError(f"the download ended at byte {position} of {written}")
                position += len(chunk)
                self._positions[me] = position
                self._trim()
                yield chunk
            elif self.done and (end is None or position >= end):
                return
            else:
                # A reader waiting ahead of the download holds back nothing it has not reached.
                self._trim()
                await progress.wait()


@dataclass
class _FetchBody:
    fetch: _Fetch
    size: int | None
    result: CacheResult

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.fetch.tail(start, end)


class BlobService:
    def __init__(self, *, storage: Storage, upstream: Upstream, clearances: Clearances) -> None:
        self._storage = storage
        self._upstream = upstream
        self._clearances = clearances
        self._fetches: dict[Digest, _Fetch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Many requests through one repository need one answer from the upstream, not one each.
        self._checks: SingleFlight[tuple[Target, Digest, str], None] = SingleFlight()
        self.joins = 0
        self.uncached = 0

    @property
    def in_flight(self) -> int:
        return len(self._fetches)

    async def stat(self, target: Target, digest: Digest, *, env: str) -> tuple[int | None, CacheResult]:
        """Size for a HEAD, answered locally whenever the cache can."""
        caller = Caller(env, self._upstream.access_key(env, target.registry))
        if await self._cached_for(target, digest, caller):
            size = self._storage.size(ContentKind.BLOB, digest)
            if size is not None:
                return size, CacheResult.HIT
        async with self._upstream.open(target, "HEAD", f"blobs/{digest}", env=env, kind=EndpointKind.BLOB) as resp:
            self._clearances.record(caller, target)
            return resp.content_length, CacheResult.MISS

    @contextlib.asynccontextmanager
    async def open(self, target: Target, digest: Digest, *, env: str) -> AsyncIterator[BlobBody]:
        caller = Caller(env, self._upstream.access_key(env, target.registry))
        fetch = None
        # A second round only when the download this request was cleared to
        # follow ended while it was being cleared: it is cached now, or failed.
        for _ in range(2):
            if await self._cached_for(target, digest, caller):
                async with self._storage.open(ContentKind.BLOB, digest) as content:
                    if content is not None:
                        yield _CachedBody(content)
                        return
            fetch = self._joinable(digest)
            if fetch is None or fetch.vouches_for(target, caller):
                break
            if not await self._vouchable(fetch.target, target, digest):
                fetch = None  # this registry's own download, verified
                break
            if not await self._cleared(target, digest, caller):
                await self._authorize(target, digest, caller)
            fetch = self._joinable(digest)
            if fetch is not None:
                break
        fetch, expected, result = await self._follow(fetch, target, digest, caller)
        try:
            yield _FetchBody(fetch, expected, result)
        finally:
            fetch.release()

    async def _follow(self, fetch: _Fetch | None, target: Target, digest: Digest,
                      caller: Caller) -> tuple[_Fetch, int | None, CacheResult]:
        """Hold a download of the blob (``fetch``, or a new one) once it knows its size."""
        while True:
            if fetch is None:
                fetch, result = self._start(target, digest, caller), CacheResult.MISS
            else:
                result = CacheResult.JOINED
                self.joins += 1
            fetch.hold()
            try:
                return fetch, await fetch.size, result
            except Exception:
                fetch.release()
                if fetch.vouches_for(target, caller):
                    raise
                # The download this request followed failed for its own
                # repository or access; this one was cleared to read the
                # blob, so it fetches the blob itself rather than share a
                # refusal that was not its own.
                fetch = None

    async def aclose(self) -> None:
        """Stop every download; what they wrote is discarded."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._checks.aclose()

    async def _cached_for(self, target: Target, digest: Digest, caller: Caller) -> bool:
        if self._storage.size(ContentKind.BLOB, digest) is None:
            return False
        fetch = self._fetches.get(digest)
        if fetch is not None and fetch.vouches_for(target, caller):
            # Committed a moment ago by this repository's own download, which links it next.
            return True
        if not await self._cleared(target, digest, caller):
            if not await self._storage.registry_holds(target.registry, digest):
                return False  # seen only through other registries: see _vouchable
            # The content is here, but was seen for another repository, or
            # this access was not cleared for it lately. Whether it may be
            # served now is for the upstream to say, so ask it first.
            try:
                await self._authorize(target, digest, caller)
            except RegistryError as err:
                self._clearances.check_failed(caller, err)
                # With the upstream down, the last clearance this access got
                # for the repository stands, as a stale tag does.
                if err.code in STALE_OK and await self._storage.blob_access(target, digest) == caller.access:
                    return True
                raise
        return True

    async def _vouchable(self, seen: Target, target: Target, digest: Digest) -> bool:
        """Whether a HEAD through ``target`` may clear content seen through ``seen``.

        Only within one registry, whose repositories it answers for. Any other
        registry could answer 200 to any digest, so content only another
        registry was seen to hold is fetched from this one and verified.
        """
        return seen.registry == target.registry or await self._storage.registry_holds(target.registry, digest)

    async def _cleared(self, target: Target, digest: Digest, caller: Caller) -> bool:
        return self._clearances.fresh(caller, target) and await self._storage.blob_access(target, digest) is not None

    async def _authorize(self, target: Target, digest: Digest, caller: Caller) -> None:
        """Raises the upstream's refusal unless this repository, with this access, may read the blob."""
        await self._checks.do((target, digest, caller.access), lambda: self._clear(target, digest, caller))

    async def _clear(self, target: Target, digest: Digest, caller: Caller) -> None:
        async with self._upstream.open(target, "HEAD", f"blobs/{digest}", env=caller.environment,
                                       kind=EndpointKind.BLOB):
            pass
        self._clearances.record(caller, target)
        await self._storage.link_blob(target, digest, caller.access)

    def _joinable(self, digest: Digest) -> _Fetch | None:
        fetch = self._fetches.get(digest)
        return fetch if fetch is not None and fetch.joinable else None

    def _forget(self, digest: Digest, fetch: _Fetch) -> None:
        # Another request may have started a download of its own meanwhile.
        if self._fetches.get(digest) is fetch:
            del self._fetches[digest]

    def _start(self, target: Target, digest: Digest, caller: Caller) -> _Fetch:
        fetch = _Fetch(target, caller)
        self._fetches[digest] = fetch
        task = asyncio.ensure_future(self._run(fetch, digest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    def _uncached(self, fetch: _Fetch, digest: Digest, why: StorageFull, hasher: hashlib._Hash) -> hashlib._Hash:
        log.warning("streaming %s uncached after %d bytes: %s", digest, fetch.written, why)
        fetch.stop_caching()
        self.uncached += 1
        return hasher

    async def _run(self, fetch: _Fetch, digest: Digest) -> None:
        target = fetch.target
        try:
            async with self._upstream.open(target, "GET", f"blobs/{digest}", env=fetch.caller.environment,
                                           kind=EndpointKind.BLOB) as resp:
                self._clearances.record(fetch.caller, target)
                expected = resp.content_length
                hasher: hashlib._Hash | None = None
                try:
                    fetch.partial = await self._storage.begin_blob(digest, expected)
                except StorageFull as exc:
                    hasher = self._uncached(fetch, digest, exc, digest.hasher())
                fetch.size.set_result(expected)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    if hasher is None:
                        assert fetch.partial is not None
                        try:
                            await fetch.partial.append(chunk)
                            fetch.written = fetch.partial.written
                        except StorageFull as exc:
                            hasher = self._uncached(fetch, digest, exc, await fetch.partial.uncache())
                    if hasher is not None:
                        hasher.update(chunk)
                        fetch.add_uncached(chunk)
                    fetch.advance()
                    await fetch.drained()
                    if hasher is not None and not fetch.readers:
                        raise RegistryError(ErrorCode.UNAVAILABLE, "every reader of the uncached download left")
            written = fetch.written
            if expected is not None and written != expected:
                raise RegistryError(ErrorCode.UNKNOWN,
                                    f"upstream {target.registry} sent {written} of {expected} bytes for {digest}")
            mismatch = RegistryError(ErrorCode.DIGEST_INVALID,
                                     f"upstream {target.registry} sent content that does not match {digest}")
            if hasher is not None:
                if hasher.hexdigest() != digest.hex:
                    raise mismatch
            else:
                assert fetch.partial is not None
                try:
                    await fetch.partial.commit()
                except DigestMismatch:
                    raise mismatch from None
                except StorageFull as exc:
                    # Verified, but there was no room to keep it: readers finish from the file they follow.
                    log.warning("not caching %s: %s", digest, exc)
                    await fetch.partial.discard()
                else:
                    await self._storage.link_blob(target, digest, fetch.caller.access)
            self._forget(digest, fetch)
            fetch.finish()
        except BaseException as exc:
            self._forget(digest, fetch)
            if isinstance(exc, Exception):
                log.warning("fetch of %s from %s failed: %s", digest, target, exc)
            # Gone before readers learn of the failure, so nothing half-written
            # outlives the response that reported it.
            if fetch.partial is not None:
                await fetch.partial.discard()
            fetch.finish(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            fetch.download_ended()
