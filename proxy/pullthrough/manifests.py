"""Manifests: exact bytes by digest, tags trusted for ``tag_ttl`` then revalidated by HEAD.

A tag is revalidated with a HEAD, which Docker Hub does not count against its
pull limit. When the upstream is down, rate limiting or failing, the last
known manifest is served for up to ``max_stale`` and marked stale. Only what
``manifest_shape`` accepts is cached or served, under a registered media type.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from typing import TypeVar

from proxy.config.settings import CacheSettings
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.pullthrough.manifest_shape import MANIFEST_TYPES, head_media_type, manifest_media_type
from proxy.pullthrough.ports import STALE_OK, CacheResult, Upstream
from proxy.reference import Digest, InvalidReference, Target, parse_digest
from proxy.singleflight import SingleFlight
from proxy.storage.base import ContentKind, ManifestLink, Storage, TagRecord
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.endpoints import EndpointKind

__all__ = ["DEFAULT_ACCEPT", "INLINE", "Manifest", "ManifestService", "hash_body", "revalidation", "stale_allowed"]


DEFAULT_ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
))

# What docker, containerd, podman and skopeo all accept; their tags share one record.
_USUAL = frozenset(part.strip() for part in DEFAULT_ACCEPT.split(","))

# Hashing or parsing more than this takes longer than handing it to a thread.
INLINE = 256 * 1024

_MANIFEST = ContentKind.MANIFEST

T = TypeVar("T")


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None only for HEAD answers that never needed the bytes
    cache: CacheResult


class ManifestService:
    def __init__(self, *, storage: Storage, upstream: Upstream, cache: CacheSettings, clearances: Clearances,
                 clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._upstream = upstream
        self._clearances = clearances
        self._cache = cache
        self._clock = clock
        self._flights: SingleFlight[Hashable, Manifest] = SingleFlight()

    @property
    def joins(self) -> int:
        return self._flights.joins

    async def aclose(self) -> None:
        await self._flights.aclose()

    async def get(self, target: Target, reference: str | Digest, *, env: str, accept: str | None,
                  head: bool) -> Manifest:
        caller = Caller(env, self._upstream.access_key(env, target.registry))
        if isinstance(reference, Digest):
            return await self._by_digest(target, reference, accept=accept, head=head, caller=caller)
        return await self._by_tag(target, reference, accept=accept, head=head, caller=caller)

    async def _by_digest(self, target: Target, digest: Digest, *, accept: str | None, head: bool,
                         caller: Caller) -> Manifest:
        local = await self._local(target, digest, head=head, cache=CacheResult.HIT, caller=caller)
        if local is not None:
            return local
        link = await self._storage.manifest_link(target, digest)
        if link is not None and await self._local(target, digest, head=True, cache=CacheResult.HIT) is not None:
            # Cached, but this access was not cleared for the repository
            # lately: the upstream decides whether it may have it.
            await self._refusable(self._head(target, str(digest), accept, caller), caller)
            await self._storage.link_manifest(target, digest, ManifestLink(link.media_type, caller.access))
            # Cleared just now: no TTL to consult (tag_ttl may be 0).
            revalidated = await self._local(target, digest, head=head, cache=CacheResult.REVALIDATED)
            if revalidated is not None:
                return revalidated
        key = ("digest", target, digest, head, caller.access)
        return await self._flights.do(key, lambda: self._fetch(target, str(digest), accept, head, caller,
                                                               expect=digest))

    async def _by_tag(self, target: Target, tag: str, *, accept: str | None, head: bool, caller: Caller) -> Manifest:
        kept_as = _record_name(tag, accept)
        record = await self._storage.tag(target, kept_as)
        if (record is not None and self._clearances.fresh(caller, target) and _acceptable(record.media_type, accept)
                and record.age(self._clock()) < self._cache.tag_ttl):
            local = await self._local(target, parse_digest(record.digest), head=head, cache=CacheResult.HIT,
                                      caller=caller)
            if local is not None:
                return local
        key = ("tag", target, tag, accept, head, caller.access)
        return await self._flights.do(key, lambda: self._refresh_tag(target, tag, kept_as, record, accept, head,
                                                                     caller))

    async def _revalidation(self, check: Awaitable[T], target: Target) -> T:
        return await revalidation(check, upstream=self._upstream, registry=target.registry, cache=self._cache)

    async def _refusable(self, check: Awaitable[T], caller: Caller) -> T:
        """``check`` of cached content; a refusal of it is counted as one."""
        try:
            return await check
        except RegistryError as err:
            self._clearances.check_failed(caller, err)
            raise

    async def _refresh_tag(self, target: Target, tag: str, kept_as: str, record: TagRecord | None,
                           accept: str | None, head: bool, caller: Caller) -> Manifest:
        usable = record if record is not None and _acceptable(record.media_type, accept) else None
        manifest: Manifest | None = None
        try:
            # Revalidate with a HEAD only when a matching answer can be served from here.
            cached = usable is not None and await self._local(target, parse_digest(usable.digest), head=True,
                                                              cache=CacheResult.HIT) is not None
            if usable is not None and (head or cached):
                check = self._head(target, tag, accept, caller)
                current = await (self._revalidation(self._refusable(check, caller), target) if cached else check)
                if current is not None and current.digest == usable.digest:
                    revalidated = await self._revalidated(target, kept_as, usable, head=head, caller=caller)
                    if revalidated is not None:
                        return revalidated
                elif head:
                    manifest = current
            manifest = manifest or await self._fetch(target, tag, accept, head, caller)
        except RegistryError as err:
            stale = await self._stale(target, usable, err, head=head, caller=caller)
            if stale is None:
                raise
            return stale
        await self._storage.set_tag(target, kept_as, TagRecord(manifest.digest, manifest.media_type, manifest.size,
                                                               self._clock(), caller.access))
        return manifest

    async def _revalidated(self, target: Target, kept_as: str, usable: TagRecord, *, head: bool,
                           caller: Caller) -> Manifest | None:
        """The cached manifest, vouched for by a HEAD made with today's credentials."""
        digest = parse_digest(usable.digest)
        link = await self._storage.manifest_link(target, digest)
        if link is not None:
            await self._storage.link_manifest(target, digest, ManifestLink(link.media_type, caller.access))
        local = await self._local(target, digest, head=head, cache=CacheResult.REVALIDATED)
        if local is not None:
            await self._storage.set_tag(target, kept_as, replace(usable, checked_at=self._clock(),
                                                                 access=caller.access))
        return local

    async def _stale(self, target: Target, record: TagRecord | None, err: RegistryError, *,
                     head: bool, caller: Caller) -> Manifest | None:
        if record is None or not stale_allowed(record, err, caller=caller, target=target,
                                               clearances=self._clearances, cache=self._cache, now=self._clock()):
            return None
        return await self._local(target, parse_digest(record.digest), head=head, cache=CacheResult.STALE)

    async def _local(self, target: Target, digest: Digest, *, head: bool, cache: CacheResult,
                     caller: Caller | None = None) -> Manifest | None:
        """The cached manifest, if this repository holds it (and ``caller`` was cleared for it lately, when given)."""
        link = await self._storage.manifest_link(target, digest)
        if link is None or (caller is not None and not self._clearances.fresh(caller, target)):
            return None
        if link.media_type not in MANIFEST_TYPES:
            # Cached before types were checked: fetched and checked again rather than served.
            return None
        if head:
            size = self._storage.size(_MANIFEST, digest)
            return None if size is None else Manifest(str(digest), link.media_type, size, None, cache)
        body = await self._storage.read_small(_MANIFEST, digest)
        if body is None:
            return None
        return Manifest(str(digest), link.media_type, len(body), body, cache)

    async def _head(self, target: Target, reference: str, accept: str | None, caller: Caller) -> Manifest | None:
        headers = {"Accept": accept or DEFAULT_ACCEPT}
        async with self._upstream.open(target, "HEAD", f"manifests/{reference}", env=caller.environment,
                                       kind=EndpointKind.MANIFEST, headers=headers) as resp:
            self._clearances.record(caller, target)
            digest = resp.headers.get("Docker-Content-Digest")
            # Without a registered type, only a GET and its checked body can tell what this is.
            media_type = head_media_type(resp.headers.get("Content-Type"))
            if not digest or resp.content_length is None or media_type is None:
                return None
            return Manifest(digest, media_type, resp.content_length, None, CacheResult.MISS)

    async def _fetch(self, target: Target, reference: str, accept: str | None, head: bool, caller: Caller,
                     expect: Digest | None = None) -> Manifest:
        if head:
            found = await self._head(target, reference, accept, caller)
            if found is not None and (expect is None or found.digest == str(expect)):
                return found
        headers = {"Accept": accept or DEFAULT_ACCEPT}
        async with self._upstream.open(target, "GET", f"manifests/{reference}", env=caller.environment,
                                       kind=EndpointKind.MANIFEST, headers=headers) as resp:
            self._clearances.record(caller, target)
            try:
                body = await read_limited(resp, self._cache.max_manifest_size)
            except BodyTooLarge:
                raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                    f"manifest from {target.registry} is larger than the "
                                    f"{self._cache.max_manifest_size} byte limit (cache.max_manifest_size)") from None
            content_type = resp.headers.get("Content-Type")
            claimed = resp.headers.get("Docker-Content-Digest")
        wanted = expect or _claimed_digest(claimed)
        algorithm = wanted.algorithm if wanted is not None else "sha256"
        digest = Digest(algorithm, await hash_body(algorithm, body))
        if wanted is not None and digest != wanted:
            raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                f"upstream {target.registry} sent a manifest that does not match {wanted}")
        media_type = await _checked_type(content_type, body, target.registry)
        await self._storage.put(_MANIFEST, digest, body)
        await self._storage.link_manifest(target, digest, ManifestLink(media_type, caller.access))
        return Manifest(str(digest), media_type, len(body), None if head else body, CacheResult.MISS)


async def revalidation(check: Awaitable[T], *, upstream: Upstream, registry: str, cache: CacheSettings) -> T:
    """The upstream's check of a cached copy, within cache.revalidate_timeout.

    Only the request upstream: a deadline around cache writes could cut
    one short after its file was moved into place but before it was
    accounted for.
    """
    try:
        async with asyncio.timeout(cache.revalidate_timeout):
            return await check
    except TimeoutError:
        message = (f"upstream {registry} did not answer within cache.revalidate_timeout "
                   f"({cache.revalidate_timeout:g} s)")
        # Remembered, so the requests after this one do not wait for it again.
        upstream.unresponsive(registry, message)
        raise RegistryError(ErrorCode.UNAVAILABLE, message) from None


def stale_allowed(record: TagRecord, err: RegistryError, *, caller: Caller, target: Target, clearances: Clearances,
                  cache: CacheSettings, now: float) -> bool:
    """Whether a tag's last known answer may stand in for the upstream's, which failed with ``err``."""
    if err.code not in STALE_OK:
        return False
    window = cache.tag_ttl + cache.max_stale
    # Never stale across a credential change, nor to an access the
    # upstream has not cleared for this repository within the window.
    if record.access != caller.access and not clearances.seen_within(caller, target, window):
        return False
    return record.age(now) <= window


async def hash_body(algorithm: str, body: bytes) -> str:
    """The hex digest of a manifest-sized body, off the event loop when it is large."""
    if len(body) <= INLINE:
        return hashlib.new(algorithm, body).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.new(algorithm, body).hexdigest())


async def _checked_type(content_type: str | None, body: bytes, registry: str) -> str:
    if len(body) <= INLINE:
        return manifest_media_type(content_type, body, upstream=registry)
    return await asyncio.to_thread(manifest_media_type, content_type, body, upstream=registry)


def _claimed_digest(claimed: str | None) -> Digest | None:
    try:
        return parse_digest(claimed) if claimed else None
    except InvalidReference:
        return None


def _record_name(tag: str, accept: str | None) -> str:
    """Where a tag's record for this Accept set is kept.

    The upstream answers each Accept set on its own terms (an index for one,
    a single-platform manifest for another), so clients that accept less
    than the usual set get records of their own instead of overwriting, and
    refetching, each other's. Only registered types count, so there are
    few such records however clients write their Accept. "@" cannot occur
    in a tag.
    """
    offered = {part.split(";", 1)[0].strip() for part in (accept or "").split(",")}
    if not accept or "*/*" in offered or offered >= _USUAL:
        return tag
    known = sorted(offered & MANIFEST_TYPES)
    return f"{tag}@{hashlib.sha256(','.join(known).encode()).hexdigest()[:12]}"


def _acceptable(media_type: str, accept: str | None) -> bool:
    if not accept:
        return True
    offered = {part.split(";", 1)[0].strip() for part in accept.split(",")}
    return media_type in offered or "*/*" in offered
