"""Environments share one cache, and each is served only what the upstream lets its own access read.

Two tenants on one proxy: team-a holds a credential for the token-auth
upstream, team-b holds none (its requests upstream are anonymous). Private
repositories need a login there; public ones do not.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .admin import Admin, new_token
from .bgserver import BackgroundApp
from .http import Reply, basic, call, get
from .images import ImageInfo, build_image, push, sha256_digest
from .proxyproc import ProxyFactory, ProxyProcess
from .scrape import scrape
from .tokenserver import TokenServer
from .tools import skopeo, skopeo_ok, wait_until
from .upstream import MANIFEST_ACCEPT, Upstream

REGISTRY = "registry.example.com"
PRIVATE = f"/v2/{REGISTRY}/private/app"


@dataclass
class Tenants:
    proxy: ProxyProcess
    admin: Admin
    a: dict[str, Any]  # team-a's pull key
    b: dict[str, Any]  # team-b's pull key
    credential: dict[str, Any]  # team-a's credential for the upstream


def tenants(make_proxy: ProxyFactory, upstream: Upstream, token_server: TokenServer) -> Tenants:
    token = new_token()
    proxy = make_proxy({"registries": [{"address": REGISTRY, "endpoint": upstream.url, "token_realms": upstream.token_realms}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)
    admin.environment("team-a")
    admin.environment("team-b")
    user, password = next(iter(token_server.users.items()))
    credential = admin.add(REGISTRY, user, password, environment="team-a")
    return Tenants(proxy, admin, admin.key("team-a"), admin.key("team-b"), credential)


def creds(key: dict[str, Any]) -> str:
    return f"{key['id']}:{key['secret']}"


def pull(proxy: ProxyProcess, key: dict[str, Any], ref: str, dest: Path) -> int:
    """skopeo copy logged in with a pull key; its exit code."""
    return skopeo("copy", "--retry-times=0", "--src-tls-verify=false", f"--src-creds={creds(key)}",
                  f"docker://{proxy.host}/{REGISTRY}/{ref}", f"dir:{dest}").returncode


def assert_pulled(dest: Path, image: ImageInfo) -> None:
    assert (dest / "manifest.json").read_bytes() == image.manifest_bytes
    for digest in image.blob_digests:
        assert sha256_digest((dest / digest.removeprefix("sha256:")).read_bytes()) == digest


def image_paths(base: str, image: ImageInfo) -> list[str]:
    """What a pull asks for: the manifest by tag and by digest, and every blob."""
    return [f"{base}/manifests/1", f"{base}/manifests/{image.manifest_digest}",
            *(f"{base}/blobs/{digest}" for digest in image.blob_digests)]


def assert_refused(proxy: ProxyProcess, key: dict[str, Any], paths: list[str], image: ImageInfo,
                   statuses: tuple[int, ...] = (401, 403)) -> list[Reply]:
    """GET and HEAD of each path are refused, and say nothing of the content; the GET replies."""
    headers = {"Accept": MANIFEST_ACCEPT, "Authorization": basic(key["id"], key["secret"])}
    replies = []
    for path in paths:
        for method in ("HEAD", "GET"):
            reply = call(proxy.host, method, path, headers)
            assert reply.status in statuses, (method, path, reply.status, reply.body[:200])
            assert "x-registry-proxy-cache" not in reply.headers and "docker-content-digest" not in reply.headers
            assert image.manifest_bytes not in reply.body and image.config_bytes not in reply.body
        replies.append(reply)
    return replies


def upstream_mark(upstream: Upstream) -> int:
    """Index in the upstream's access log after which every request made so far is logged.

    A request of our own with a unique query, waited for: the registry logs
    a request after answering it, so counts taken without this could miss
    the last few.
    """
    marker = f"mark={secrets.token_hex(4)}"
    get(upstream.host, f"/v2/?{marker}")

    def logged() -> list[int]:
        return [i for i, r in enumerate(upstream.log_requests()) if r["query"] == marker]

    return wait_until(logged, what=f"{marker} in the upstream's log")[0]


def test_a_key_pulls_the_private_image_with_team_a_credentials(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    t = tenants(make_proxy, token_upstream, token_server)
    authfile = tmp_path / "auth.json"
    skopeo_ok("login", "--tls-verify=false", f"--authfile={authfile}", f"--username={t.a['id']}",
              f"--password={t.a['secret']}", t.proxy.host)
    token_server.requests.clear()

    skopeo_ok("copy", "--retry-times=0", "--src-tls-verify=false", f"--src-authfile={authfile}",
              f"docker://{t.proxy.host}/{REGISTRY}/private/app:1", f"dir:{tmp_path / 'a'}")
    assert_pulled(tmp_path / "a", image)
    # The upstream saw team-a's credential, and nobody else's.
    [user] = token_server.users
    assert {r["username"] for r in token_server.requests} == {user}


def test_b_is_refused_what_a_cached_from_a_private_repository(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    t = tenants(make_proxy, token_upstream, token_server)
    assert pull(t.proxy, t.a, "private/app:1", tmp_path / "a") == 0
    cached = get(t.proxy.host, f"{PRIVATE}/blobs/{image.layers[0][0]}", Authorization=basic(t.a["id"], t.a["secret"]))
    assert cached.headers["x-registry-proxy-cache"] == "hit"
    refusals = scrape(t.proxy)("registry_proxy_isolation_refusals_total", environment="team-b")

    paths = image_paths(PRIVATE, image)
    replies = assert_refused(t.proxy, t.b, paths, image)
    assert all(reply.error_codes in (["UNAUTHORIZED"], ["DENIED"]) for reply in replies)
    # Each answer was the upstream's, asked with team-b's access, and counted.
    after = scrape(t.proxy)("registry_proxy_isolation_refusals_total", environment="team-b")
    assert after - refusals == 2 * len(paths)
    assert pull(t.proxy, t.b, "private/app:1", tmp_path / "b") != 0
    assert not (tmp_path / "b" / "manifest.json").exists()

    # Nor through a repository team-b may read: the upstream knows no such blob there.
    build_image(oci_layout, "2", layer_sizes=[1000])
    push(token_upstream, oci_layout, "2", "public/app")
    assert pull(t.proxy, t.b, "public/app:2", tmp_path / "public") == 0
    public = [f"/v2/{REGISTRY}/public/app/blobs/{digest}" for digest in image.blob_digests]
    assert_refused(t.proxy, t.b, public, image, statuses=(404,))


def test_a_registry_that_claims_every_blob_gets_none_from_the_cache(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    """A registry anyone can run answers 200 to a HEAD for any digest; the proxy must not take its word."""
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    asked: list[str] = []

    async def claim_everything(request: web.Request) -> web.Response:
        asked.append(request.method)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": "2000", "Docker-Content-Digest": request.match_info["d"]})
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "no"}]}, status=404)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/v2/", ping)
    app.router.add_route("*", "/v2/me/x/blobs/{d}", claim_everything)
    hostile = BackgroundApp(app, name="e2e-hostile-registry")
    try:
        t = tenants(make_proxy, token_upstream, token_server)
        t.admin.ok("PATCH", "/upstreams/evil.example", {"endpoint": hostile.url})
        assert pull(t.proxy, t.a, "private/app:1", tmp_path / "a") == 0
        for digest in image.blob_digests:
            reply = get(t.proxy.host, f"/v2/evil.example/me/x/blobs/{digest}", Authorization=basic(t.b["id"], t.b["secret"]))
            assert reply.status == 404 and reply.error_codes == ["BLOB_UNKNOWN"], (reply.status, reply.body[:200])
            assert sha256_digest(reply.body) != digest
        # It was asked for the bytes themselves, never trusted on a HEAD.
        assert asked and set(asked) == {"GET"}
    finally:
        hostile.stop()


def test_public_image_cached_for_a_is_served_to_b_without_downloading_again(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000, 3000])
    push(token_upstream, oci_layout, "1", "public/app")
    t = tenants(make_proxy, token_upstream, token_server)
    assert pull(t.proxy, t.a, "public/app:1", tmp_path / "a") == 0
    start = upstream_mark(token_upstream)

    assert pull(t.proxy, t.b, "public/app:1", tmp_path / "b") == 0
    assert_pulled(tmp_path / "b", image)
    end = upstream_mark(token_upstream)
    during = [(r["method"], r["path"]) for r in token_upstream.log_requests()[start + 1:end]]
    # team-b's access had to be cleared for the repository, by a manifest HEAD; nothing else.
    assert during and all(method == "HEAD" and "/manifests/" in path for method, path in during), during
    for digest in image.blob_digests:
        assert token_upstream.count_requests("GET", f"/public/app/blobs/{digest}") == 1, digest


def test_deactivated_credential_stops_serving_its_cached_private_image(
        token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, make_proxy: ProxyFactory,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2000])
    push(token_upstream, oci_layout, "1", "private/app")
    t = tenants(make_proxy, token_upstream, token_server)
    assert pull(t.proxy, t.a, "private/app:1", tmp_path / "before") == 0

    t.admin.ok("POST", f"/registries/{t.credential['id']}/deactivate")
    start = upstream_mark(token_upstream)
    token_server.requests.clear()
    replies = assert_refused(t.proxy, t.a, image_paths(PRIVATE, image), image)
    assert all("deactivated" in reply.error_message for reply in replies)
    assert pull(t.proxy, t.a, "private/app:1", tmp_path / "after") != 0
    # The upstream was asked, without a login, and said no.
    asked = [r for r in token_server.requests if "repository:private/app:pull" in r["scopes"]]
    assert asked and not any(r["authorization"] for r in asked)
    end = upstream_mark(token_upstream)
    answers = {r["status"] for r in token_upstream.log_requests()[start + 1:end] if r["path"].startswith("/v2/private/")}
    assert answers == {401}
