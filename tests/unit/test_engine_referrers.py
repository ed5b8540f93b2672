"""ReferrersService against a counting fake upstream, the real filesystem cache and an injected clock.

A referrers list is kept like a tag: trusted for ``tag_ttl``, served stale
while the upstream fails for ``max_stale``, and only to an access the
upstream cleared for the repository. The HTTP side (headers, pages, a real
upstream's 404) is in test_engine_referrers_http.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from operator import attrgetter

import pytest
from proxy.config.settings import CacheSettings
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.ports import STALE_OK, CacheResult
from proxy.pullthrough.referrers import Referrers, ReferrersService
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind

from .engine_fakes import OCI_MANIFEST, WAIT, Clock, FakeUpstream, ObservedStorage, digest_of

APP = Target("registry-a.test", "team/app")
TTL, MAX_STALE = 300.0, 3600.0
SUBJECT = digest_of(b"the image the signature and the SBOM are about")
SIGNATURE = {"mediaType": OCI_MANIFEST, "digest": str(digest_of(b"sig")), "size": 3,
             "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}
SBOM = {"mediaType": OCI_MANIFEST, "digest": str(digest_of(b"sbom")), "size": 4,
        "artifactType": "application/spdx+json"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def referrers(storage: ObservedStorage, upstream: FakeUpstream, clock: Clock) -> AsyncIterator[ReferrersService]:
    service = ReferrersService(storage=storage, upstream=upstream,
                               cache=CacheSettings(tag_ttl=TTL, max_stale=MAX_STALE),
                               clearances=Clearances(ttl=TTL, clock=clock), clock=clock)
    yield service
    await service.aclose()


def call(subject: Digest = SUBJECT) -> tuple[str, str, Target]:
    return ("GET", f"referrers/{subject}", APP)


async def listed(service: ReferrersService, *, env: str = "default",
                 artifact_type: str | None = None) -> tuple[list[str], bool, CacheResult]:
    found: Referrers = await service.get(APP, SUBJECT, env=env, artifact_type=artifact_type)
    document = json.loads(found.body)
    assert document["mediaType"] == "application/vnd.oci.image.index.v1+json"
    return [d["digest"] for d in document["manifests"]], found.filtered, found.cache


async def test_a_list_is_trusted_for_tag_ttl_then_fetched_again(
        referrers: ReferrersService, upstream: FakeUpstream, clock: Clock) -> None:
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE]
    assert await listed(referrers) == ([SIGNATURE["digest"]], False, CacheResult.MISS)
    clock.advance(TTL - 1)
    assert await listed(referrers) == ([SIGNATURE["digest"]], False, CacheResult.HIT)
    assert upstream.calls == Counter({call(): 1})

    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE, SBOM]
    clock.advance(2)
    assert await listed(referrers) == ([SIGNATURE["digest"], SBOM["digest"]], False, CacheResult.MISS)
    assert upstream.calls == Counter({call(): 2})


async def test_concurrent_requests_for_a_cold_list_make_one_upstream_request(
        referrers: ReferrersService, upstream: FakeUpstream, storage: ObservedStorage) -> None:
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE]
    upstream.gate = asyncio.Event()
    gets = [asyncio.ensure_future(listed(referrers)) for _ in range(10)]
    # Each caller looked its record up and is now waiting on the one request.
    await storage.tag_reads.reach(10)
    await upstream.gets_waiting.reach(1)
    upstream.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*gets), WAIT)
    assert results == [([SIGNATURE["digest"]], False, CacheResult.MISS)] * 10
    assert upstream.calls == Counter({call(): 1})
    assert referrers.joins == 9


@pytest.mark.parametrize("failure", sorted(STALE_OK, key=attrgetter("name")), ids=attrgetter("name"))
async def test_a_list_is_served_stale_while_the_upstream_fails_but_not_past_max_stale(
        referrers: ReferrersService, upstream: FakeUpstream, clock: Clock, failure: ErrorCode) -> None:
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE]
    await listed(referrers)
    upstream.fail(failure)

    clock.advance(TTL + 1)
    assert await listed(referrers) == ([SIGNATURE["digest"]], False, CacheResult.STALE)
    clock.advance(MAX_STALE - 2)
    assert await listed(referrers) == ([SIGNATURE["digest"]], False, CacheResult.STALE)
    clock.advance(2)
    with pytest.raises(RegistryError) as too_old:
        await listed(referrers)
    assert too_old.value.code is failure


async def test_a_refusal_or_a_missing_api_is_raised_not_hidden_by_a_stale_list(
        referrers: ReferrersService, upstream: FakeUpstream, clock: Clock) -> None:
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE]
    await listed(referrers)
    clock.advance(TTL + 1)
    upstream.fail(ErrorCode.DENIED)
    with pytest.raises(RegistryError) as denied:
        await listed(referrers)
    assert denied.value.code is ErrorCode.DENIED

    upstream.fail(None)
    del upstream.referrers[APP, str(SUBJECT)]
    with pytest.raises(RegistryError) as missing:
        await listed(referrers)
    # 404, so that clients read the fallback tag, which the message names.
    assert missing.value.status == 404 and f"sha256-{SUBJECT.hex}" in missing.value.message


async def test_a_list_cached_for_one_access_is_not_served_to_another_the_upstream_refuses(
        referrers: ReferrersService, upstream: FakeUpstream, clock: Clock) -> None:
    upstream.access[f"a/{APP.registry}"] = "cred:1"
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE]
    assert (await listed(referrers, env="a"))[2] is CacheResult.MISS

    # A private repository: b's requests are refused upstream, a's list is not handed to b.
    upstream.refuse(APP, ErrorCode.DENIED)
    with pytest.raises(RegistryError) as refused:
        await listed(referrers, env="b")
    assert refused.value.code is ErrorCode.DENIED
    assert (await listed(referrers, env="a"))[2] is CacheResult.HIT

    # Nor while the upstream is down: stale is only for the access that fetched it, or one cleared since.
    upstream.refused.clear()
    upstream.fail(ErrorCode.UNAVAILABLE)
    clock.advance(TTL + 1)
    with pytest.raises(RegistryError) as down:
        await listed(referrers, env="b")
    assert down.value.code is ErrorCode.UNAVAILABLE
    assert (await listed(referrers, env="a"))[2] is CacheResult.STALE


@pytest.mark.parametrize("upstream_filters", [True, False], ids=["upstream-filters", "upstream-ignores-filter"])
async def test_a_filtered_request_gets_a_filtered_list_kept_apart_from_the_whole_one(
        referrers: ReferrersService, upstream: FakeUpstream, upstream_filters: bool) -> None:
    upstream.referrers[APP, str(SUBJECT)] = [SIGNATURE, SBOM]
    upstream.filters = upstream_filters
    sboms = await listed(referrers, artifact_type=SBOM["artifactType"])
    assert sboms == ([SBOM["digest"]], True, CacheResult.MISS)
    assert await listed(referrers) == ([SIGNATURE["digest"], SBOM["digest"]], False, CacheResult.MISS)
    assert await listed(referrers, artifact_type=SBOM["artifactType"]) == ([SBOM["digest"]], True, CacheResult.HIT)
    assert await listed(referrers, artifact_type="application/none") == ([], True, CacheResult.MISS)
    assert upstream.calls == Counter({call(): 3})


@pytest.mark.parametrize("body", [
    b"<html>not a list</html>",
    json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                "manifests": []}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": "none"}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"size": 1}] * 200_000}).encode(),
], ids=["html", "docker-list", "no-list", "too-large"])
async def test_an_answer_that_is_not_a_bounded_oci_index_is_refused_and_not_cached(
        storage: ObservedStorage, upstream: FakeUpstream, clock: Clock, body: bytes) -> None:
    service = ReferrersService(storage=storage, upstream=upstream,
                               cache=CacheSettings(tag_ttl=TTL, max_manifest_size=1024 * 1024),
                               clearances=Clearances(ttl=TTL, clock=clock), clock=clock)
    upstream.referrers[APP, str(SUBJECT)] = body
    for _ in range(2):
        with pytest.raises(RegistryError) as refused:
            await service.get(APP, SUBJECT, env="default", artifact_type=None)
        assert refused.value.code is ErrorCode.MANIFEST_INVALID and APP.registry in refused.value.message
    assert upstream.calls == Counter({call(): 2})
    assert storage.size(ContentKind.MANIFEST, digest_of(body)) is None
    await service.aclose()
