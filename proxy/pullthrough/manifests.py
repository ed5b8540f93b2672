"""Manifests: exact bytes by digest, tags trusted for ``tag_ttl`` then revalidated by HEAD.

A tag is revalidated with a HEAD, which Docker Hub does not count against its
pull limit. When the upstream is down, rate limiting or failing, the last
known manifest is served for up to ``max_stale`` and marked stale.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace

import aiohttp

from proxy.config.settings import CacheSettings
from proxy.errors import ErrorCode, RegistryError
from proxy.reference import Digest, InvalidReference, Target, parse_digest
from proxy.singleflight import SingleFlight
from proxy.storage.content import ContentStore
from proxy.storage.index import RepositoryIndex, TagRecord
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.client import UpstreamClient

__all__ = ["DEFAULT_ACCEPT", "Manifest", "ManifestService"]

# Upstream failures for which serving the last known content beats failing the pull.
STALE_OK = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.UNKNOWN, ErrorCode.TOOMANYREQUESTS})

DEFAULT_ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
))


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    size: int
    body: bytes | None  # None only for HEAD answers that never needed the bytes
    cache: str  # hit, miss, revalidated or stale


class ManifestService:
    def __init__(self, *, store: ContentStore, index: RepositoryIndex, upstream: UpstreamClient,
                 cache: CacheSettings) -> None:
        self._store = store
        self._index = index
        self._upstream = upstream
        self._cache = cache
        self._flights: SingleFlight[Hashable, Manifest] = SingleFlight()

    @property
    def joins(self) -> int:
        return self._flights.joins

    async def get(self, target: Target, reference: str | Digest, *, accept: str | None, head: bool) -> Manifest:
        access = self._upstream.access_key(target.registry)
        if isinstance(reference, Digest):
            return await self._by_digest(target, reference, accept=accept, head=head, access=access)
        return await self._by_tag(target, reference, accept=accept, head=head, access=access)

    async def _by_digest(self, target: Target, digest: Digest, *, accept: str | None, head: bool,
                         access: str) -> Manifest:
        local = self._local(target, digest, head=head, cache="hit", access=access)
        if local is not None:
            return local
        link = self._index.manifest(target, digest)
        if link is not None and self._local(target, digest, head=True, cache="hit") is not None:
            # Cached, but seen with other credentials: the upstream decides
            # whether the current ones may have it.
            await self._head(target, str(digest), accept)
            self._index.link_manifest(target, digest, link.media_type, access)
            revalidated = self._local(target, digest, head=head, cache="revalidated", access=access)
            if revalidated is not None:
                return revalidated
        key = ("digest", target, digest, head, access)
        return await self._flights.do(key, lambda: self._fetch(target, str(digest), accept, head, access,
                                                               expect=digest))

    async def _by_tag(self, target: Target, tag: str, *, accept: str | None, head: bool, access: str) -> Manifest:
        record = self._index.tag(target, tag)
        if (record is not None and record.access == access and _acceptable(record.media_type, accept)
                and record.age() < self._cache.tag_ttl):
            local = self._local(target, parse_digest(record.digest), head=head, cache="hit", access=access)
            if local is not None:
                return local
        key = ("tag", target, tag, accept, head, access)
        return await self._flights.do(key, lambda: self._refresh_tag(target, tag, record, accept, head, access))

    async def _refresh_tag(self, target: Target, tag: str, record: TagRecord | None,
                           accept: str | None, head: bool, access: str) -> Manifest:
        usable = record if record is not None and _acceptable(record.media_type, accept) else None
        manifest: Manifest | None = None
        try:
            # Revalidate with a HEAD only when a matching answer can be served from here.
            cached = usable is not None and self._local(target, parse_digest(usable.digest), head=True,
                                                        cache="hit") is not None
            if usable is not None and (head or cached):
                current = await self._head(target, tag, accept)
                if current is not None and current.digest == usable.digest:
                    digest = parse_digest(usable.digest)
                    link = self._index.manifest(target, digest)
                    if link is not None:
                        # The HEAD, made with today's credentials, vouches for the content.
                        self._index.link_manifest(target, digest, link.media_type, access)
                    local = self._local(target, digest, head=head, cache="revalidated", access=access)
                    if local is not None:
                        self._index.set_tag(target, tag, replace(usable, checked_at=time.time(), access=access))
                        return local
                elif head:
                    manifest = current
            manifest = manifest or await self._fetch(target, tag, accept, head, access)
        except RegistryError as err:
            stale = self._stale(target, usable, err, head=head, access=access)
            if stale is None:
                raise
            return stale
        self._index.set_tag(target, tag, TagRecord(manifest.digest, manifest.media_type, manifest.size,
                                                   time.time(), access))
        return manifest

    def _stale(self, target: Target, record: TagRecord | None, err: RegistryError, *,
               head: bool, access: str) -> Manifest | None:
        # Never stale across a credential change: that content must be revalidated first.
        if record is None or record.access != access or err.code not in STALE_OK:
            return None
        if record.age() > self._cache.tag_ttl + self._cache.max_stale:
            return None
        return self._local(target, parse_digest(record.digest), head=head, cache="stale", access=access)

    def _local(self, target: Target, digest: Digest, *, head: bool, cache: str,
               access: str | None = None) -> Manifest | None:
        """The cached manifest, if this repository holds it (with ``access``, when given)."""
        link = self._index.manifest(target, digest)
        if link is None or (access is not None and link.access != access):
            return None
        if head:
            size = self._store.size(digest, "manifest")
            return None if size is None else Manifest(str(digest), link.media_type, size, None, cache)
        body = self._store.read_small(digest)
        if body is None:
            return None
        return Manifest(str(digest), link.media_type, len(body), body, cache)

    async def _head(self, target: Target, reference: str, accept: str | None) -> Manifest | None:
        headers = {"Accept": accept or DEFAULT_ACCEPT}
        async with self._upstream.open(target, "HEAD", f"manifests/{reference}", kind="manifest",
                                       headers=headers) as resp:
            digest = resp.headers.get("Docker-Content-Digest")
            if not digest or resp.content_length is None:
                return None
            return Manifest(digest, _media_type(resp, b""), resp.content_length, None, "miss")

    async def _fetch(self, target: Target, reference: str, accept: str | None, head: bool, access: str,
                     expect: Digest | None = None) -> Manifest:
        if head:
            found = await self._head(target, reference, accept)
            if found is not None and (expect is None or found.digest == str(expect)):
                return found
        headers = {"Accept": accept or DEFAULT_ACCEPT}
        async with self._upstream.open(target, "GET", f"manifests/{reference}", kind="manifest",
                                       headers=headers) as resp:
            try:
                body = await read_limited(resp, self._cache.max_manifest_size)
            except BodyTooLarge:
                raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                    f"manifest from {target.registry} is larger than the "
                                    f"{self._cache.max_manifest_size} byte limit (cache.max_manifest_size)") from None
            media_type = _media_type(resp, body)
            claimed = resp.headers.get("Docker-Content-Digest")
        digest = expect or _claimed_digest(claimed) or Digest("sha256", hashlib.sha256(body).hexdigest())
        if not digest.matches(body):
            raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                f"upstream {target.registry} sent a manifest that does not match {digest}")
        if not self._store.has(digest):
            staged = await asyncio.to_thread(self._store.stage, body)
            self._store.commit(staged, digest, len(body), "manifest")
        self._index.link_manifest(target, digest, media_type, access)
        return Manifest(str(digest), media_type, len(body), None if head else body, "miss")


def _claimed_digest(claimed: str | None) -> Digest | None:
    try:
        return parse_digest(claimed) if claimed else None
    except InvalidReference:
        return None


def _media_type(resp: aiohttp.ClientResponse, body: bytes) -> str:
    value = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if value and value not in ("application/json", "text/plain", "application/octet-stream"):
        return value
    try:
        found = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        found = None
    return found if isinstance(found, str) and found else value or "application/octet-stream"


def _acceptable(media_type: str, accept: str | None) -> bool:
    if not accept:
        return True
    offered = {part.split(";", 1)[0].strip() for part in accept.split(",")}
    return media_type in offered or "*/*" in offered
