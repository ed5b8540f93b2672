"""Upstream misbehaviour a real registry will not produce on demand, against the real proxy."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from .bgserver import BackgroundApp
from .http import call, get
from .proxyproc import ProxyFactory
from .scrape import scrape

API = {"Docker-Distribution-API-Version": "registry/2.0"}
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MT = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Scripted:
    """A registry whose next answers a test chooses: `mode` is read per request."""

    mode: str = "ok"
    realm: str | None = None  # when set, demand a Bearer token from this realm
    seen: list[dict[str, str]] = field(default_factory=list)
    server: BackgroundApp | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path, "method": request.method,
                          "authorization": request.headers.get("Authorization", "")})
        if self.mode == "silent":
            # Accepts the request and never answers it: a wedged registry, or a firewall in between.
            await asyncio.Event().wait()
        if request.path == "/v2/":
            return web.json_response({}, headers=API)
        if self.realm and not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "login"}]}, status=401,
                                     headers={**API, "WWW-Authenticate": f'Bearer realm="{self.realm}",service="s"'})
        if self.mode == "ratelimit":
            return web.json_response({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]},
                                     status=429, headers={**API, "Retry-After": "42"})
        if self.mode == "broken":
            return web.Response(status=500, text="oops", headers=API)
        if self.mode == "huge":
            return web.Response(body=b"{" + b" " * (2 * 1024 * 1024) + b"}", content_type="application/json",
                                headers=API)
        if self.mode == "lying":
            return web.Response(body=MANIFEST, headers={**API, "Content-Type": MT,
                                                        "Docker-Content-Digest": "sha256:" + "0" * 64})
        if self.mode == "loop":
            return web.Response(status=302, headers={**API, "Location": request.path})
        return web.Response(body=MANIFEST, headers={**API, "Content-Type": MT, "Docker-Content-Digest": DIGEST})


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    fake = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = BackgroundApp(app, name="e2e-scripted-upstream")
    yield fake
    fake.server.stop()


def proxy_for(make_proxy: ProxyFactory, fake: Scripted, **config: object) -> str:
    registry = {"address": "scripted.example", "endpoint": fake.url, **config.pop("registry", {})}  # type: ignore[dict-item]
    return make_proxy({"registries": [registry], **config}).host


PATH = "/v2/scripted.example/org/app/manifests/1"


def test_rate_limit_passes_retry_after_and_stale_tags_keep_serving(scripted: Scripted,
                                                                   make_proxy: ProxyFactory) -> None:
    host = proxy_for(make_proxy, scripted, cache={"tag_ttl": "0s"})
    scripted.mode = "ratelimit"
    limited = get(host, PATH)
    assert limited.status == 429 and limited.error_codes == ["TOOMANYREQUESTS"]
    assert limited.headers["retry-after"] == "42"
    assert "scripted.example" in limited.error_message

    scripted.mode = "ok"
    assert get(host, PATH).body == MANIFEST
    for mode in ("ratelimit", "broken"):
        scripted.mode = mode
        stale = get(host, PATH)
        assert stale.status == 200 and stale.body == MANIFEST, mode
        assert stale.headers["x-registry-proxy-cache"] == "stale"


def test_server_errors_are_502_naming_the_upstream(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    host = proxy_for(make_proxy, scripted)
    scripted.mode = "broken"
    reply = get(host, PATH)
    assert reply.status == 502 and reply.error_codes == ["UNKNOWN"]
    assert "scripted.example" in reply.error_message and "500" in reply.error_message


def test_oversized_manifest_is_refused(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    host = proxy_for(make_proxy, scripted, cache={"max_manifest_size": "1MiB"})
    scripted.mode = "huge"
    reply = get(host, PATH)
    assert reply.status == 502 and reply.error_codes == ["MANIFEST_INVALID"]
    assert "cache.max_manifest_size" in reply.error_message


def test_manifest_not_matching_its_digest_is_refused(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    host = proxy_for(make_proxy, scripted)
    scripted.mode = "lying"
    reply = get(host, PATH)
    assert reply.status == 502 and reply.error_codes == ["MANIFEST_INVALID"]
    scripted.mode = "ok"
    by_digest = get(host, f"/v2/scripted.example/org/app/manifests/{DIGEST}")
    assert by_digest.status == 200 and by_digest.body == MANIFEST


def test_redirect_loops_stop_after_five_hops(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    host = proxy_for(make_proxy, scripted)
    scripted.mode = "loop"
    reply = get(host, PATH)
    assert reply.status == 502 and "redirected more than 5 times" in reply.error_message
    manifest_requests = [s for s in scripted.seen if s["path"].endswith("/manifests/1")]
    assert len(manifest_requests) == 6  # the first request and five redirects


def test_credentials_go_only_to_the_registry_host_and_port_or_a_named_realm(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    asked: list[str] = []

    async def token(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        return web.json_response({"token": "t0ken", "expires_in": 300})

    def token_app() -> web.Application:
        app = web.Application()
        app.router.add_get("/token", token)
        return app

    # 127.0.0.2 is another host than the registry's 127.0.0.1.
    elsewhere = BackgroundApp(token_app(), bind="127.0.0.2", name="e2e-foreign-realm")
    try:
        scripted.realm = f"{elsewhere.url}/token"
        host = proxy_for(make_proxy, scripted, registry={"username": "u", "password": "s3cret-pw"})
        assert get(host, PATH).status == 200
        assert asked == [""], "stored credentials went to a realm on another site"

        # The registry's host on another port is another server: no credentials either.
        same_host = BackgroundApp(token_app(), name="e2e-same-host-realm")
        try:
            scripted.realm = f"{same_host.url}/token"
            other = proxy_for(make_proxy, scripted, registry={"username": "u", "password": "s3cret-pw"})
            assert get(other, PATH).status == 200
            assert asked[-1] == ""
            # Unless the registry's config names that realm.
            named = proxy_for(make_proxy, scripted, registry={"username": "u", "password": "s3cret-pw",
                                                              "token_realms": [same_host.url]})
            assert get(named, PATH).status == 200
            assert asked[-1] == "Basic " + base64.b64encode(b"u:s3cret-pw").decode()
        finally:
            same_host.stop()
    finally:
        elsewhere.stop()
    # The bearer token, not the password, went to the registry.
    assert all("s3cret" not in s["authorization"] for s in scripted.seen)
    assert any(s["authorization"] == "Bearer t0ken" for s in scripted.seen)


def test_token_requests_carry_their_own_scope_and_no_gzip(scripted: Scripted, make_proxy: ProxyFactory) -> None:
    seen: list[tuple[str, str]] = []

    async def token(request: web.Request) -> web.StreamResponse:
        scope = request.query.get("scope", "")
        seen.append((scope, request.headers.get("Accept-Encoding", "")))
        if "private/" in scope:
            return web.json_response({"errors": [{"code": "DENIED", "message": "no"}]}, status=403)
        response = web.json_response({"token": "t0ken", "expires_in": 300})
        # What nginx with `gzip on` does when the client allows it.
        response.enable_compression()
        return response

    app = web.Application()
    app.router.add_get("/token", token)
    server = BackgroundApp(app, name="e2e-picky-realm")
    try:
        scripted.realm = f"{server.url}/token"
        host = proxy_for(make_proxy, scripted)
        assert get(host, "/v2/scripted.example/private/x/manifests/1").status == 401
        # The remembered challenge came with private/x; later repositories
        # must still ask for their own scope, and get a readable token.
        for repo in ("pub/y", "pub/z"):
            assert get(host, f"/v2/scripted.example/{repo}/manifests/1").body == MANIFEST
        assert [scope for scope, _ in seen] == ["repository:private/x:pull", "repository:pub/y:pull",
                                                "repository:pub/z:pull"]
        assert all("gzip" not in encoding for _, encoding in seen)
    finally:
        server.stop()


def test_a_silent_upstream_costs_a_cached_tag_seconds_once_then_nothing(scripted: Scripted,
                                                                        make_proxy: ProxyFactory) -> None:
    # upstream.response_timeout stays at its 30 s default: the client below gives up after 20 s.
    proxy = make_proxy({"registries": [{"address": "scripted.example", "endpoint": scripted.url}],
                        "cache": {"tag_ttl": "0s", "revalidate_timeout": "0.5s"},
                        "upstream": {"failures_before_pause": 1, "pause": "1h"}})
    assert get(proxy.host, PATH).body == MANIFEST
    scripted.mode = "silent"
    seen = len(scripted.seen)

    stale = call(proxy.host, "GET", PATH, timeout=20)
    assert stale.status == 200 and stale.body == MANIFEST
    assert stale.headers["x-registry-proxy-cache"] == "stale"
    assert len(scripted.seen) == seen + 1
    # Remembered: the next requests are answered without asking it again.
    for _ in range(3):
        again = call(proxy.host, "GET", PATH, timeout=20)
        assert again.status == 200 and again.headers["x-registry-proxy-cache"] == "stale"
    cold = call(proxy.host, "GET", "/v2/scripted.example/org/other/manifests/1", timeout=20)
    assert cold.status == 503 and cold.error_codes == ["UNAVAILABLE"]
    assert "left alone" in cold.error_message
    assert len(scripted.seen) == seen + 1
    metric = scrape(proxy)
    assert metric("registry_proxy_upstream_paused", registry="scripted.example") == 1
    assert metric("registry_proxy_upstream_skipped_requests_total", registry="scripted.example") == 4
