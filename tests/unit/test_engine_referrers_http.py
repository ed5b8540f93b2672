"""The referrers API through the whole proxy, in process, from an in-process upstream that implements it.

distribution 2.8, the registry the e2e tests run, has no referrers API, so
what a 1.1 registry answers (a filter applied or not, pages, an outage) comes
from a small aiohttp registry here; the fallback tag, with a real registry
and a real OCI client, is in tests/e2e/test_artifacts.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from proxy.app import create_runner
from proxy.config.settings import CacheSettings, RegistryConfig, Settings
from yarl import URL

from .engine_fakes import OCI_INDEX, OCI_MANIFEST, digest_of
from .test_engine_http import serving

ServerFactory = Callable[..., Awaitable[TestServer]]

REGISTRY = "upstream.test"
REPOSITORY = "team/app"
SUBJECT = digest_of(b"an image")
PATH = f"/v2/{REGISTRY}/{REPOSITORY}/referrers/{SUBJECT}"
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"
REFERRERS = [{"mediaType": OCI_MANIFEST, "digest": str(digest_of(f"referrer {i}".encode())), "size": 100 + i,
              "artifactType": SIGNATURE_TYPE if i % 2 else SBOM_TYPE} for i in range(5)]


class ReferrersRegistry:
    """A registry with only the referrers API; ``mode`` says how it answers, ``page_size`` whether it pages."""

    def __init__(self) -> None:
        self.mode = "filters"  # "filters", "ignores-filter", "without-api", "unknown-repository" or "failing"
        self.page_size: int | None = None
        self.queries: list[dict[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        match = re.fullmatch(r"/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})", request.path)
        if self.mode == "failing":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "unknown-repository":
            return web.json_response({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]},
                                     status=404)
        if self.mode == "without-api" or match is None:
            # What distribution 2.8's router answers for a path it has no route for.
            return web.Response(status=404, text="404 page not found\n")
        listed = REFERRERS if match["digest"] == str(SUBJECT) else []
        headers = {}
        artifact_type = request.query.get("artifactType")
        if artifact_type is not None and self.mode == "filters":
            listed = [d for d in listed if d["artifactType"] == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(request.query.get("page", "0"))
        if self.page_size is not None:
            end = start + self.page_size
            if end < len(listed):
                query = urlencode({**request.query, "page": str(end)})
                headers["Link"] = f'<{request.path}?{query}>; rel="next"'
            listed = listed[start:end]
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}
        return web.json_response(body, content_type=OCI_INDEX, headers=headers)


@pytest.fixture
async def proxy(tmp_path: Path, aiohttp_server: ServerFactory) -> AsyncIterator[tuple[URL, ReferrersRegistry]]:
    registry = ReferrersRegistry()
    upstream = await aiohttp_server(registry.app())
    endpoint = str(upstream.make_url("")).rstrip("/")
    # tag_ttl 0: every request asks the upstream, so each test sees its answer (caching is test_engine_referrers.py's).
    settings = Settings(data_dir=tmp_path / "data", secret_key_file=tmp_path / "secret.key",
                        cache=CacheSettings(tag_ttl=0),
                        registries={REGISTRY: RegistryConfig(address=REGISTRY, endpoint=endpoint)})
    async with serving(create_runner(settings)) as url:
        yield url, registry


async def fetch(url: URL, query: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as client, client.get(url.with_path(PATH, encoded=True).with_query(query or {})
                                                               ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def digests(body: bytes) -> list[str]:
    document = json.loads(body)
    assert document["mediaType"] == OCI_INDEX
    return [d["digest"] for d in document["manifests"]]


@pytest.mark.parametrize("mode", ["filters", "ignores-filter"])
async def test_a_filtered_list_carries_oci_filters_applied_whether_or_not_the_upstream_filtered(
        proxy: tuple[URL, ReferrersRegistry], mode: str) -> None:
    url, registry = proxy
    registry.mode = mode
    status, headers, body = await fetch(url, {"artifactType": SBOM_TYPE})
    assert status == 200 and headers["Content-Type"] == OCI_INDEX
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert digests(body) == [d["digest"] for d in REFERRERS if d["artifactType"] == SBOM_TYPE]
    assert registry.queries == [{"artifactType": SBOM_TYPE}]  # the filter went upstream

    status, headers, body = await fetch(url)
    assert status == 200 and "OCI-Filters-Applied" not in headers
    assert digests(body) == [d["digest"] for d in REFERRERS]
    assert headers["X-Registry-Proxy-Cache"] == "miss"


async def test_an_upstream_that_pages_its_list_is_followed_to_the_end(proxy: tuple[URL, ReferrersRegistry]) -> None:
    url, registry = proxy
    registry.page_size = 2
    status, headers, body = await fetch(url)
    assert status == 200 and "Link" not in headers
    assert digests(body) == [d["digest"] for d in REFERRERS]
    assert [q.get("page") for q in registry.queries] == [None, "2", "4"]


async def test_a_list_is_served_stale_with_a_warning_while_the_upstream_fails(
        proxy: tuple[URL, ReferrersRegistry]) -> None:
    url, registry = proxy
    assert (await fetch(url))[0] == 200
    registry.mode = "failing"
    status, headers, body = await fetch(url)
    assert status == 200 and digests(body) == [d["digest"] for d in REFERRERS]
    assert headers["X-Registry-Proxy-Cache"] == "stale"
    assert headers["Warning"] == '110 registry-proxy "Response is Stale"'

    # A list never fetched has nothing to fall back on.
    status, _, body = await fetch(url, {"artifactType": SBOM_TYPE})
    assert status == 502 and json.loads(body)["errors"][0]["code"] == "UNKNOWN"


async def test_an_upstream_without_the_api_gets_its_clients_a_404_so_they_read_the_fallback_tag(
        proxy: tuple[URL, ReferrersRegistry]) -> None:
    url, registry = proxy
    registry.mode = "without-api"
    status, _, body = await fetch(url)
    error = json.loads(body)["errors"][0]
    # Not NAME_UNKNOWN: oras-go and notation take a 404 with that code for a missing repository, and do not
    # fall back to the tag then.
    assert (status, error["code"]) == (404, "MANIFEST_UNKNOWN")
    assert f"sha256-{SUBJECT.hex}" in error["message"]

    # A 1.1 registry that says the repository is unknown is passed on as it said it.
    registry.mode = "unknown-repository"
    status, _, body = await fetch(url)
    assert (status, json.loads(body)["errors"][0]["code"]) == (404, "NAME_UNKNOWN")


async def test_a_subject_that_is_not_a_digest_is_invalid(proxy: tuple[URL, ReferrersRegistry]) -> None:
    url, registry = proxy
    async with aiohttp.ClientSession() as client, client.get(
            url.with_path(f"/v2/{REGISTRY}/{REPOSITORY}/referrers/latest", encoded=True)) as resp:
        assert resp.status == 400 and (await resp.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert registry.queries == []
