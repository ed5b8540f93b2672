"""Referrers (OCI distribution 1.1): which manifests name a digest as their ``subject``, kept like a tag.

A list is trusted for ``tag_ttl``, served stale for ``max_stale`` while the
upstream fails, and only to an access the upstream cleared for the
repository, as tags are. It is checked like a manifest: an OCI image index
of at most ``max_manifest_size``, nothing else. An ``artifactType`` filter is
forwarded, and applied here when the upstream did not apply it, so a
filtered request always gets a filtered list. An upstream without the API
answers 404, which is passed on: clients then read the ``<alg>-<hex>`` tag,
an ordinary tag here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from proxy.config.settings import CacheSettings
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.pullthrough.manifest_shape import OCI_INDEX, manifest_media_type
from proxy.pullthrough.manifests import INLINE, hash_body, revalidation, stale_allowed
from proxy.pullthrough.ports import CacheResult, Upstream
from proxy.pullthrough.tags import next_link_query
from proxy.reference import Digest, Target, parse_digest
from proxy.singleflight import SingleFlight
from proxy.storage.base import ContentKind, Storage, TagRecord
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.endpoints import EndpointKind

__all__ = ["FILTERS_APPLIED", "MAX_PAGES", "Referrers", "ReferrersService"]

FILTERS_APPLIED = "OCI-Filters-Applied"
# Pages of one list followed upstream; a list longer than this is refused rather than cut short,
# since a missing signature is worse than an error.
MAX_PAGES = 16

_MANIFEST = ContentKind.MANIFEST


@dataclass(frozen=True)
class Referrers:
    body: bytes  # an OCI image index
    filtered: bool  # by the artifactType asked for: the answer carries OCI-Filters-Applied
    cache: CacheResult


class ReferrersService:
    def __init__(self, *, storage: Storage, upstream: Upstream, cache: CacheSettings, clearances: Clearances,
                 clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._upstream = upstream
        self._cache = cache
        self._clearances = clearances
        self._clock = clock
        self._flights: SingleFlight[Hashable, Referrers] = SingleFlight()

    @property
    def joins(self) -> int:
        return self._flights.joins

    async def aclose(self) -> None:
        await self._flights.aclose()

    async def get(self, target: Target, subject: Digest, *, env: str, artifact_type: str | None) -> Referrers:
        caller = Caller(env, self._upstream.access_key(env, target.registry))
        kept_as = _record_name(subject, artifact_type)
        record = await self._storage.tag(target, kept_as)
        if (record is not None and self._clearances.fresh(caller, target)
                and record.age(self._clock()) < self._cache.tag_ttl):
            body = await self._storage.read_small(_MANIFEST, parse_digest(record.digest))
            if body is not None:
                return Referrers(body, artifact_type is not None, CacheResult.HIT)
        key = ("referrers", target, subject, artifact_type, caller.access)
        return await self._flights.do(key, lambda: self._refresh(target, subject, artifact_type, kept_as, record,
                                                                 caller))

    async def _refresh(self, target: Target, subject: Digest, artifact_type: str | None, kept_as: str,
                       record: TagRecord | None, caller: Caller) -> Referrers:
        kept = None if record is None else await self._storage.read_small(_MANIFEST, parse_digest(record.digest))
        try:
            fetch = self._fetch(target, subject, artifact_type, caller)
            # With a copy to fall back on, a silent upstream costs the revalidation deadline, as for a tag.
            body = await (revalidation(fetch, upstream=self._upstream, registry=target.registry, cache=self._cache)
                          if kept is not None else fetch)
        except RegistryError as err:
            if kept is not None:
                self._clearances.check_failed(caller, err)
            if (record is None or kept is None
                    or not stale_allowed(record, err, caller=caller, target=target, clearances=self._clearances,
                                         cache=self._cache, now=self._clock())):
                raise
            return Referrers(kept, artifact_type is not None, CacheResult.STALE)
        digest = Digest("sha256", await hash_body("sha256", body))
        await self._storage.put(_MANIFEST, digest, body)
        await self._storage.set_tag(target, kept_as, TagRecord(str(digest), OCI_INDEX, len(body), self._clock(),
                                                               caller.access))
        return Referrers(body, artifact_type is not None, CacheResult.MISS)

    async def _fetch(self, target: Target, subject: Digest, artifact_type: str | None, caller: Caller) -> bytes:
        """The whole list, its pages joined; filtered by ``artifact_type`` here if the upstream did not."""
        params = {} if artifact_type is None else {"artifactType": artifact_type}
        limit = self._cache.max_manifest_size
        pages: list[bytes] = []
        documents: list[dict[str, Any]] = []
        applied = True
        while True:
            if len(pages) == MAX_PAGES:
                raise RegistryError(ErrorCode.MANIFEST_INVALID, f"upstream {target.registry} pages the referrers "
                                    f"of {subject} beyond {MAX_PAGES} pages; refused rather than cut short")
            page, content_type, filters, next_query = await self._page(target, subject, params, caller,
                                                                       limit - sum(map(len, pages)))
            pages.append(page)
            documents.append(await _checked_index(content_type, page, target.registry))
            applied = applied and "artifacttype" in filters
            if next_query is None:
                break
            # Only the upstream's query is taken from its link: the path stays this one.
            params = dict(parse_qsl(next_query))
        if len(pages) == 1 and (artifact_type is None or applied):
            return pages[0]  # the upstream's bytes, as it sent them
        descriptors = [descriptor for document in documents for descriptor in document["manifests"]]
        if artifact_type is not None and not applied:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
        return json.dumps({**documents[0], "manifests": descriptors}).encode()

    async def _page(self, target: Target, subject: Digest, params: dict[str, str], caller: Caller,
                    limit: int) -> tuple[bytes, str | None, set[str], str | None]:
        try:
            async with self._upstream.open(target, "GET", f"referrers/{subject}", env=caller.environment,
                                           kind=EndpointKind.REFERRERS, headers={"Accept": OCI_INDEX},
                                           params=params) as resp:
                self._clearances.record(caller, target)
                try:
                    body = await read_limited(resp, limit)
                except BodyTooLarge:
                    raise RegistryError(ErrorCode.MANIFEST_INVALID,
                                        f"referrers of {subject} from {target.registry} are larger than the "
                                        f"{self._cache.max_manifest_size} byte limit (cache.max_manifest_size)"
                                        ) from None
                filters = {part.strip().lower() for value in resp.headers.getall(FILTERS_APPLIED, [])
                           for part in value.split(",")}
                return body, resp.headers.get("Content-Type"), filters, next_link_query(resp.links)
        except RegistryError as err:
            if err.status != 404:
                raise
            # What a registry without the API answers; clients then read the fallback tag.
            raise RegistryError(err.code, f"upstream {target.registry} answered 404 for the referrers of {subject}, "
                                f"as a registry without the referrers API does; clients then read the tag "
                                f"{subject.algorithm}-{subject.hex} ({err.message})") from None


async def _checked_index(content_type: str | None, body: bytes, registry: str) -> dict[str, Any]:
    if len(body) <= INLINE:
        return _index(content_type, body, registry)
    return await asyncio.to_thread(_index, content_type, body, registry)


def _index(content_type: str | None, body: bytes, registry: str) -> dict[str, Any]:
    """An OCI image index in its shape, by manifest_shape's rules; a Docker manifest list is not one."""
    media_type = manifest_media_type(content_type, body, upstream=registry)
    if media_type != OCI_INDEX:
        raise RegistryError(ErrorCode.MANIFEST_INVALID, f"upstream {registry} sent a {media_type} as a referrers "
                            "list, which must be an OCI image index; refused, not cached")
    document: dict[str, Any] = json.loads(body)
    return document


def _record_name(subject: Digest, artifact_type: str | None) -> str:
    """Where the list for this subject and filter is kept, among the repository's tag records.

    "@" cannot occur in a tag, so these never meet a tag's record; the
    filter is hashed, so any value the client sends makes a plain file name.
    """
    name = f"@referrers@{subject.algorithm}-{subject.hex}"
    if artifact_type is None:
        return name
    return f"{name}@{hashlib.sha256(artifact_type.encode(errors='surrogatepass')).hexdigest()[:16]}"
