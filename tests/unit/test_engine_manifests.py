"""ManifestService against a counting fake upstream, the real filesystem cache and an injected clock.

Tags are trusted for ``tag_ttl``, then revalidated with one HEAD; a failing
upstream gets the last known manifest served, marked stale, for ``max_stale``
and no longer. The clock is the test's, so no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator
from operator import attrgetter

import pytest
from proxy.config.settings import CacheSettings
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.manifests import Manifest, ManifestService
from proxy.pullthrough.ports import STALE_OK, CacheResult
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind, ManifestLink

from .engine_fakes import (
    OCI_MANIFEST,
    WAIT,
    Clock,
    FakeUpstream,
    ObservedStorage,
    digest_of,
    flipped,
    manifest_call,
)

APP = Target("registry-a.test", "team/app")
TTL, MAX_STALE = 300.0, 3600.0
V1 = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [{"size": 1}]}).encode()
V2 = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [{"size": 2}]}).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def manifests(storage: ObservedStorage, upstream: FakeUpstream, clock: Clock) -> AsyncIterator[ManifestService]:
    service = ManifestService(storage=storage, upstream=upstream,
                              cache=CacheSettings(tag_ttl=TTL, max_stale=MAX_STALE),
                              clearances=Clearances(ttl=TTL, clock=clock), clock=clock)
    yield service
    await service.aclose()


async def get(manifests: ManifestService, reference: str | Digest, *, head: bool = False) -> Manifest:
    return await manifests.get(APP, reference, env="default", accept=None, head=head)


def served(manifest: Manifest) -> tuple[str, bytes | None, CacheResult]:
    return manifest.digest, manifest.body, manifest.cache


async def test_a_warm_tag_within_tag_ttl_and_a_warm_digest_make_no_upstream_call(
        manifests: ManifestService, upstream: FakeUpstream, clock: Clock) -> None:
    digest = upstream.add_manifest(APP, "1.0", V1)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.MISS)
    assert upstream.calls == Counter({manifest_call("GET", APP, "1.0"): 1})
    upstream.reset()

    clock.advance(TTL - 1)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.HIT)
    assert served(await get(manifests, digest)) == (str(digest), V1, CacheResult.HIT)
    for reference in ("1.0", digest):
        head = await get(manifests, reference, head=True)
        assert (head.digest, head.size, head.media_type, head.cache) == (str(digest), len(V1), OCI_MANIFEST,
                                                                        CacheResult.HIT)
    assert upstream.calls == Counter()


async def test_twenty_concurrent_gets_of_a_cold_tag_make_one_get(
        manifests: ManifestService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_manifest(APP, "1.0", V1)
    upstream.gate = asyncio.Event()
    gets = [asyncio.ensure_future(get(manifests, "1.0")) for _ in range(20)]
    # Each caller looked its tag up and is now waiting on the one fetch.
    await storage.tag_reads.reach(20)
    await upstream.gets_waiting.reach(1)
    upstream.gate.set()

    results = await asyncio.wait_for(asyncio.gather(*gets), WAIT)
    assert {served(m) for m in results} == {(str(digest), V1, CacheResult.MISS)}
    assert upstream.calls == Counter({manifest_call("GET", APP, "1.0"): 1})
    assert manifests.joins == 19


async def test_a_tag_past_tag_ttl_is_revalidated_with_one_head_when_its_digest_is_unchanged(
        manifests: ManifestService, upstream: FakeUpstream, clock: Clock) -> None:
    digest = upstream.add_manifest(APP, "1.0", V1)
    await get(manifests, "1.0")
    upstream.reset()

    clock.advance(TTL + 1)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.REVALIDATED)
    assert upstream.calls == Counter({manifest_call("HEAD", APP, "1.0"): 1})

    # Revalidated means trusted for another tag_ttl from now.
    clock.advance(TTL - 1)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.HIT)
    assert upstream.count() == 1


async def test_a_tag_past_tag_ttl_that_moved_upstream_is_fetched_again(
        manifests: ManifestService, upstream: FakeUpstream, clock: Clock) -> None:
    upstream.add_manifest(APP, "1.0", V1)
    await get(manifests, "1.0")
    moved = upstream.add_manifest(APP, "1.0", V2)
    upstream.reset()

    clock.advance(TTL + 1)
    assert served(await get(manifests, "1.0")) == (str(moved), V2, CacheResult.MISS)
    assert upstream.calls == Counter({manifest_call("HEAD", APP, "1.0"): 1, manifest_call("GET", APP, "1.0"): 1})
    assert served(await get(manifests, "1.0")) == (str(moved), V2, CacheResult.HIT)


@pytest.mark.parametrize("failure", sorted(STALE_OK, key=attrgetter("name")), ids=attrgetter("name"))
async def test_a_stale_tag_is_served_while_the_upstream_fails_but_not_past_max_stale(
        manifests: ManifestService, upstream: FakeUpstream, clock: Clock, failure: ErrorCode) -> None:
    digest = upstream.add_manifest(APP, "1.0", V1)
    await get(manifests, "1.0")
    upstream.fail(failure)
    upstream.reset()

    clock.advance(TTL + 1)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.STALE)
    clock.advance(MAX_STALE - 2)
    assert served(await get(manifests, "1.0")) == (str(digest), V1, CacheResult.STALE)
    assert upstream.calls == Counter({manifest_call("HEAD", APP, "1.0"): 2})

    clock.advance(2)
    with pytest.raises(RegistryError) as too_old:
        await get(manifests, "1.0")
    assert too_old.value.code is failure


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()


async def test_clients_with_different_accept_sets_keep_their_own_tag_records(
        manifests: ManifestService, upstream: FakeUpstream) -> None:
    upstream.add_manifest(APP, "1.0", INDEX, OCI_INDEX)
    upstream.add_manifest(APP, "1.0", V1, OCI_MANIFEST)
    usual = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " \
            "application/vnd.docker.distribution.manifest.v2+json, " \
            "application/vnd.docker.distribution.manifest.list.v2+json"
    single = OCI_MANIFEST  # an older client that takes no index

    async def pull(accept: str) -> tuple[bytes | None, CacheResult]:
        manifest = await manifests.get(APP, "1.0", env="default", accept=accept, head=False)
        return manifest.body, manifest.cache

    assert await pull(usual) == (INDEX, CacheResult.MISS)
    assert await pull(single) == (V1, CacheResult.MISS)
    upstream.reset()
    for _ in range(3):
        assert await pull(usual) == (INDEX, CacheResult.HIT)
        assert await pull(single) == (V1, CacheResult.HIT)
    assert upstream.calls == Counter()


async def test_a_silent_upstream_costs_a_cached_tag_the_revalidation_deadline_not_its_timeout(
        storage: ObservedStorage, upstream: FakeUpstream, clock: Clock) -> None:
    service = ManifestService(storage=storage, upstream=upstream,
                              cache=CacheSettings(tag_ttl=TTL, max_stale=MAX_STALE, revalidate_timeout=0.05),
                              clearances=Clearances(ttl=TTL, clock=clock), clock=clock)
    digest = upstream.add_manifest(APP, "1.0", V1)
    await service.get(APP, "1.0", env="default", accept=None, head=False)
    upstream.silent = True
    clock.advance(TTL + 1)
    # Bounded by the test, so a regression fails instead of hanging.
    stale = await asyncio.wait_for(service.get(APP, "1.0", env="default", accept=None, head=False), 10)
    assert served(stale) == (str(digest), V1, CacheResult.STALE)
    assert upstream.unresponsive_reports == [APP.registry]  # so the next request need not wait
    await service.aclose()


@pytest.mark.parametrize("failure", [ErrorCode.MANIFEST_UNKNOWN, ErrorCode.NAME_UNKNOWN, ErrorCode.DENIED,
                                     ErrorCode.UNAUTHORIZED], ids=attrgetter("name"))
async def test_an_upstream_answer_that_is_not_a_transient_failure_is_raised_not_hidden_by_a_stale_copy(
        manifests: ManifestService, upstream: FakeUpstream, clock: Clock, failure: ErrorCode) -> None:
    upstream.add_manifest(APP, "1.0", V1)
    await get(manifests, "1.0")
    upstream.fail(failure)

    clock.advance(TTL + 1)
    with pytest.raises(RegistryError) as raised:
        await get(manifests, "1.0")
    assert raised.value.code is failure


@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_a_cached_manifest_with_other_bytes_on_disk_is_fetched_again(
        manifests: ManifestService, upstream: FakeUpstream, storage: ObservedStorage, by: str) -> None:
    digest = upstream.add_manifest(APP, "1.0", V1)
    await get(manifests, "1.0")
    path = storage.layout.content(ContentKind.MANIFEST, digest)
    path.write_bytes(flipped(V1))
    upstream.reset()

    reference = "1.0" if by == "tag" else digest
    assert served(await get(manifests, reference)) == (str(digest), V1, CacheResult.MISS)
    assert upstream.calls == Counter({manifest_call("GET", APP, reference): 1})
    assert path.read_bytes() == V1
    assert served(await get(manifests, reference)) == (str(digest), V1, CacheResult.HIT)
    assert upstream.count() == 1


async def test_a_manifest_that_does_not_match_its_digest_is_refused_and_not_cached(
        manifests: ManifestService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_manifest(APP, None, V1)
    upstream.corrupt.add(digest)

    with pytest.raises(RegistryError) as refused:
        await get(manifests, digest)
    assert refused.value.code is ErrorCode.MANIFEST_INVALID
    assert storage.size(ContentKind.MANIFEST, digest) is None
    assert storage.size(ContentKind.MANIFEST, digest_of(flipped(V1))) is None


HOSTILE = {
    "html": (b"<html><script>fetch('/status.json')</script></html>", "text/html"),
    "image-and-index": (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": [],
                                    "manifests": []}).encode(), OCI_MANIFEST),
    "contradicting": (V1, "application/vnd.oci.image.index.v1+json"),
    "gzip": (gzip.compress(V1), OCI_MANIFEST),
    "not-json": (b"layers: []", OCI_MANIFEST),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_manifest_of_the_wrong_type_or_shape_is_refused_and_not_cached(
        name: str, manifests: ManifestService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    body, media_type = HOSTILE[name]
    digest = upstream.add_manifest(APP, "1.0", body, media_type)
    for reference in ("1.0", "1.0", digest):
        with pytest.raises(RegistryError) as caught:
            await get(manifests, reference)
        assert caught.value.code is ErrorCode.MANIFEST_INVALID and APP.registry in str(caught.value)
    # Each request went upstream again: nothing was kept.
    assert upstream.calls == Counter({manifest_call("GET", APP, "1.0"): 2, manifest_call("GET", APP, digest): 1})
    assert await storage.manifest_link(APP, digest) is None and storage.size(ContentKind.MANIFEST, digest) is None
    assert await storage.tag(APP, "1.0") is None


async def test_a_head_answer_of_an_unregistered_type_is_checked_with_a_get(
        manifests: ManifestService, upstream: FakeUpstream) -> None:
    body, media_type = HOSTILE["html"]
    upstream.add_manifest(APP, "1.0", body, media_type)
    with pytest.raises(RegistryError) as caught:
        await get(manifests, "1.0", head=True)
    assert caught.value.code is ErrorCode.MANIFEST_INVALID
    assert upstream.calls == Counter({manifest_call("HEAD", APP, "1.0"): 1, manifest_call("GET", APP, "1.0"): 1})

    upstream.reset()
    digest = upstream.add_manifest(APP, "2.0", V1, f"{OCI_MANIFEST}; charset=utf-8")
    head = await get(manifests, "2.0", head=True)
    assert (head.digest, head.media_type) == (str(digest), OCI_MANIFEST)
    assert upstream.calls == Counter({manifest_call("HEAD", APP, "2.0"): 1})


async def test_a_manifest_cached_under_an_unregistered_type_is_fetched_and_checked_again(
        manifests: ManifestService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    digest = upstream.add_manifest(APP, None, V1)
    await storage.put(ContentKind.MANIFEST, digest, V1)
    await storage.link_manifest(APP, digest, ManifestLink("text/html", ""))
    found = await get(manifests, digest)
    assert (found.media_type, found.body, found.cache) == (OCI_MANIFEST, V1, CacheResult.MISS)
    assert upstream.calls == Counter({manifest_call("GET", APP, digest): 1})
    link = await storage.manifest_link(APP, digest)
    assert link is not None and link.media_type == OCI_MANIFEST
