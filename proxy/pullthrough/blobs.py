"""Blobs: served from the cache, or streamed from upstream to every waiting client at once.

One download per digest, whichever repository of a registry asks (see
``download`` for how its bytes reach readers, the temp file and the hash at
once). Every client asking for it meanwhile follows the download from the
first byte on, so 20 concurrent pulls make one upstream request. A request
through another repository (or with other credentials) than the download's
first asks the upstream whether it may read the blob, with its own access,
before it follows along; a request through another registry fetches the
blob from that registry.

Bodies are handed out as pieces: bytes from memory, or ``FileRange``s of
cache files that the connection sends without copying them through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.pullthrough.download import BlobStreamError, Download, Piece
from proxy.pullthrough.ports import STALE_OK, CacheResult, Upstream
from proxy.reference import Digest, Target
from proxy.singleflight import SingleFlight
from proxy.storage.base import Content, ContentKind, DigestMismatch, FillClaim, PartialBlob, Storage, StorageFull
from proxy.upstream.endpoints import EndpointKind

__all__ = ["BlobBody", "BlobService", "BlobStreamError", "Piece"]

log = logging.getLogger(__name__)

# What one read of the upstream's body asks for; it answers with what it has, up to this.
CHUNK = 1024 * 1024
# Rounds of a request that finds, each time, the blob committed elsewhere and then gone again (evicted).
_ROUNDS = 3


class FilledElsewhere(Exception):
    """Another process sharing the cache committed the blob while this one waited to download it."""


class BlobBody(Protocol):
    @property
    def size(self) -> int | None: ...

    @property
    def result(self) -> CacheResult: ...

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[Piece]: ...


@dataclass
class _CachedBody:
    content: Content
    result: CacheResult = CacheResult.HIT

    @property
    def size(self) -> int:
        return self.content.size

    async def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[Piece]:
        yield self.content.span(start, self.size if end is None else end)


@dataclass
class _FetchBody:
    fetch: Download
    size: int | None
    result: CacheResult

    def read(self, start: int = 0, end: int | None = None) -> AsyncIterator[Piece]:
        return self.fetch.tail(start, end)


class BlobService:
    def __init__(self, *, storage: Storage, upstream: Upstream, clearances: Clearances) -> None:
        self._storage = storage
        self._upstream = upstream
        self._clearances = clearances
        self._fetches: dict[Digest, Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Many requests through one repository need one answer from the upstream, not one each.
        self._checks: SingleFlight[tuple[Target, Digest, str], None] = SingleFlight()
        self.joins = 0
        self.uncached = 0
        self.waits = 0  # downloads that waited for another process sharing the cache

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
        # Another round when the download this request followed found the blob
        # committed by another process sharing the cache: it is served from there.
        for _ in range(_ROUNDS):
            fetch = None
            # A second pass only when the download this request was cleared to
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
            try:
                fetch, expected, result = await self._follow(fetch, target, digest, caller)
            except FilledElsewhere:
                continue
            try:
                yield _FetchBody(fetch, expected, result)
            finally:
                fetch.release()
            return
        raise RegistryError(ErrorCode.UNAVAILABLE, f"{digest} was committed and gone again while this request waited")

    async def _follow(self, fetch: Download | None, target: Target, digest: Digest,
                      caller: Caller) -> tuple[Download, int | None, CacheResult]:
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
            except FilledElsewhere:
                fetch.release()
                raise
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

    def _joinable(self, digest: Digest) -> Download | None:
        fetch = self._fetches.get(digest)
        return fetch if fetch is not None and fetch.joinable else None

    def _forget(self, digest: Digest, fetch: Download) -> None:
        # Another request may have started a download of its own meanwhile.
        if self._fetches.get(digest) is fetch:
            del self._fetches[digest]

    def _start(self, target: Target, digest: Digest, caller: Caller) -> Download:
        fetch = Download(target, caller)
        self._fetches[digest] = fetch
        task = asyncio.ensure_future(self._run(fetch, digest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fetch

    def _uncached(self, fetch: Download, digest: Digest) -> Callable[[StorageFull], None]:
        def note(why: StorageFull) -> None:
            log.warning("streaming %s uncached after %d bytes: %s", digest, fetch.file_end, why)
            self.uncached += 1
        return note

    async def _claim(self, target: Target, digest: Digest) -> FillClaim:
        """The right to download ``digest``, once no other process sharing the cache is downloading it.

        Raises ``FilledElsewhere`` when one committed it meanwhile, for this
        registry: readers are served from the cache instead.
        """
        waited = False
        while True:
            claim = await self._storage.claim_fill(digest)
            if (self._storage.size(ContentKind.BLOB, digest) is not None
                    and await self._storage.registry_holds(target.registry, digest)):
                if claim is not None:
                    await claim.release()
                raise FilledElsewhere(str(digest))
            if claim is not None:
                return claim
            if not waited:
                waited = True
                self.waits += 1
            await self._storage.wait_fill(digest)

    async def _run(self, fetch: Download, digest: Digest) -> None:
        target = fetch.target
        claim: FillClaim | None = None
        try:
            claim = await self._claim(target, digest)
            async with self._upstream.open(target, "GET", f"blobs/{digest}", env=fetch.caller.environment,
                                           kind=EndpointKind.BLOB) as resp:
                self._clearances.record(fetch.caller, target)
                expected = resp.content_length
                partial: PartialBlob | None = None
                uncached = self._uncached(fetch, digest)
                try:
                    partial = await self._storage.begin_blob(digest, expected)
                except StorageFull as exc:
                    uncached(exc)
                fetch.begin(expected, partial, digest.hasher(), uncached)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await fetch.receive(chunk)
                    if fetch.uncached and not fetch.readers:
                        raise RegistryError(ErrorCode.UNAVAILABLE, "every reader of the uncached download left")
            await fetch.received_all()
            if expected is not None and fetch.received != expected:
                raise RegistryError(ErrorCode.UNKNOWN,
                                    f"upstream {target.registry} sent {fetch.received} of {expected} bytes for {digest}")
            if not fetch.matches(digest.hex):
                raise RegistryError(ErrorCode.DIGEST_INVALID,
                                    f"upstream {target.registry} sent content that does not match {digest}")
            if partial is not None and not fetch.uncached:
                await self._keep(partial, target, digest, fetch.caller.access)
            self._forget(digest, fetch)
            fetch.finish()
        except BaseException as exc:
            self._forget(digest, fetch)
            if isinstance(exc, Exception) and not isinstance(exc, FilledElsewhere):
                log.warning("fetch of %s from %s failed: %s", digest, target, exc)
            await fetch.stop_writing()
            # Gone before readers learn of the failure, so nothing half-written
            # outlives the response that reported it.
            if fetch.partial is not None:
                await fetch.partial.discard()
            fetch.finish(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            fetch.download_ended()
            # Only once committed (or dropped): a process waiting for the blob finds it then.
            if claim is not None:
                await claim.release()

    async def _keep(self, partial: PartialBlob, target: Target, digest: Digest, access: str) -> None:
        """Commit a verified download; its readers finish from the file they follow whatever happens to it."""
        try:
            await partial.commit()
        except (OSError, DigestMismatch) as exc:
            log.warning("not caching %s: %s", digest, exc)
            await partial.discard()
            return
        await self._storage.link_blob(target, digest, access)
