"""Real skopeo pulls through the real proxy from real distribution upstreams."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .faults import RedirectingUpstream
from .http import call, get
from .images import MT_INDEX, build_image, build_index, push, sha256_digest
from .proxyproc import ProxyFactory
from .tokenserver import TokenServer
from .tools import skopeo, skopeo_ok
from .upstream import Upstream


def mapped(address: str, upstream: Upstream | RedirectingUpstream, **extra: str) -> dict[str, object]:
    realms = upstream.token_realms if isinstance(upstream, Upstream) else []
    return {"registries": [{"address": address, "endpoint": upstream.url, "token_realms": realms, **extra}]}


def pull(proxy_host: str, ref: str, dest: Path, *extra: str) -> None:
    skopeo_ok("copy", "--src-tls-verify=false", "--src-no-creds", *extra, f"docker://{proxy_host}/{ref}", f"dir:{dest}")


def test_prefixed_pull_is_cached_and_verified(plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory,
                                              tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[300_000, 5_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy(mapped("quay.io", plain_upstream))

    pull(proxy.host, "quay.io/org/app:1", tmp_path / "first")
    for digest in image.blob_digests:
        blob = (tmp_path / "first" / digest.split(":")[1]).read_bytes()
        assert sha256_digest(blob) == digest
        assert plain_upstream.count_requests("GET", f"/blobs/{digest}") == 1
    manifest_gets = plain_upstream.count_requests("GET", "/manifests/1")

    pull(proxy.host, "quay.io/org/app:1", tmp_path / "second")
    # Warm pull: nothing reaches the upstream.
    for digest in image.blob_digests:
        assert plain_upstream.count_requests("GET", f"/blobs/{digest}") == 1
    assert plain_upstream.count_requests("GET", "/manifests/1") == manifest_gets
    assert (tmp_path / "second" / "manifest.json").read_bytes() == image.manifest_bytes

    reply = get(proxy.host, f"/v2/quay.io/org/app/blobs/{image.layers[0][0]}")
    assert reply.headers["x-registry-proxy-cache"] == "hit"
    assert reply.headers["docker-content-digest"] == image.layers[0][0]


def test_multi_arch_index_keeps_exact_bytes(plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory,
                                            tmp_path: Path) -> None:
    index_digest, index_bytes, images = build_index(oci_layout, "multi", [("linux", "amd64"), ("linux", "arm64")])
    push(plain_upstream, oci_layout, "multi", "org/app", all_platforms=True)
    proxy = make_proxy(mapped("quay.io", plain_upstream))

    raw = skopeo_ok("inspect", "--raw", "--tls-verify=false", "--no-creds",
                    f"docker://{proxy.host}/quay.io/org/app:multi", text=False).stdout
    assert raw == index_bytes
    skopeo_ok("copy", "--all", "--src-tls-verify=false", "--src-no-creds",
              f"docker://{proxy.host}/quay.io/org/app:multi", f"oci:{tmp_path / 'out'}:multi")
    copied = json.loads((tmp_path / "out" / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == index_digest

    head = call(proxy.host, "HEAD", "/v2/quay.io/org/app/manifests/multi")
    assert head.status == 200
    assert head.headers["content-type"] == MT_INDEX
    assert head.headers["docker-content-digest"] == index_digest
    assert head.headers["content-length"] == str(len(index_bytes))
    assert head.headers["etag"] == f'"{index_digest}"'
    for image in images:
        reply = get(proxy.host, f"/v2/quay.io/org/app/manifests/{image.manifest_digest}")
        assert reply.status == 200 and reply.body == image.manifest_bytes
        assert reply.headers["docker-content-digest"] == image.manifest_digest


def test_htpasswd_upstream_gets_configured_credentials_only(htpasswd_upstream: Upstream, oci_layout: Path,
                                                            make_proxy: ProxyFactory, tmp_path: Path) -> None:
    build_image(oci_layout, "1")
    push(htpasswd_upstream, oci_layout, "1", "team/tool")
    user, password = next(iter(htpasswd_upstream.users.items()))
    with_creds = make_proxy(mapped("registry.example.com", htpasswd_upstream, username=user, password=password))
    pull(with_creds.host, "registry.example.com/team/tool:1", tmp_path / "ok")

    anonymous = make_proxy(mapped("registry.example.com", htpasswd_upstream), name="anonymous")
    failed = skopeo("copy", "--src-tls-verify=false", "--src-no-creds",
                    f"docker://{anonymous.host}/registry.example.com/team/tool:1", f"dir:{tmp_path / 'no'}")
    assert failed.returncode != 0
    # The client's own credentials are for the proxy (a pull key), never for the upstream.
    before = htpasswd_upstream.count_requests("GET", "/v2/team/tool/manifests/1")
    reply = get(anonymous.host, "/v2/registry.example.com/team/tool/manifests/1",
                Authorization="Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    assert reply.status == 401
    assert reply.error_codes == ["UNAUTHORIZED"]
    assert "pull key" in reply.error_message
    assert htpasswd_upstream.count_requests("GET", "/v2/team/tool/manifests/1") == before
    assert password not in anonymous.log_text() + with_creds.log_text()


def test_bearer_token_upstream_private_and_public(token_upstream: Upstream, token_server: TokenServer,
                                                  oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    build_image(oci_layout, "1")
    push(token_upstream, oci_layout, "1", "public/app")
    push(token_upstream, oci_layout, "1", "private/app")
    user, password = next(iter(token_server.users.items()))

    anonymous = make_proxy(mapped("registry.example.com", token_upstream), name="anonymous")
    token_server.requests.clear()
    pull(anonymous.host, "registry.example.com/public/app:1", tmp_path / "public")
    reply = get(anonymous.host, "/v2/registry.example.com/private/app/manifests/1",
                Authorization="Bearer client-token-for-the-proxy")
    assert reply.status == 401 and reply.error_codes == ["UNAUTHORIZED"]
    assert token_server.requests, "the proxy should have asked the token server"
    assert not any(r["authorization"] for r in token_server.requests)

    authed = make_proxy(mapped("registry.example.com", token_upstream, username=user, password=password))
    token_server.requests.clear()
    pull(authed.host, "registry.example.com/private/app:1", tmp_path / "private")
    assert {r["username"] for r in token_server.requests} == {user}
    asked = len(token_server.requests)
    # Tokens are cached per scope: a second pull (revalidating nothing) asks for none.
    pull(authed.host, "registry.example.com/private/app:1", tmp_path / "again")
    assert len(token_server.requests) == asked
    assert password not in authed.log_text()


def test_tags_list_pages_point_back_at_the_proxy(plain_upstream: Upstream, oci_layout: Path,
                                                 make_proxy: ProxyFactory) -> None:
    build_image(oci_layout, "1")
    tags = ["a", "b", "c", "d", "e"]
    push(plain_upstream, oci_layout, "1", "org/app")
    for tag in tags:
        skopeo_ok("copy", "--quiet", "--preserve-digests", *plain_upstream.skopeo_flags("src"),
                  *plain_upstream.skopeo_flags("dest"), f"docker://{plain_upstream.host}/org/app:1",
                  f"docker://{plain_upstream.host}/org/app:{tag}")
    proxy = make_proxy(mapped("quay.io", plain_upstream))

    seen: list[str] = []
    path: str | None = "/v2/quay.io/org/app/tags/list?n=2"
    pages = 0
    while path is not None:
        reply = get(proxy.host, path)
        assert reply.status == 200
        assert reply.json()["name"] == "quay.io/org/app"
        assert len(reply.json()["tags"]) <= 2
        seen += reply.json()["tags"]
        link = reply.headers.get("link")
        path = None
        if link is not None:
            assert link.startswith("</v2/quay.io/org/app/tags/list?") and link.endswith('>; rel="next"')
            path = link[1:link.index(">")]
        pages += 1
    assert seen == sorted(["1", *tags])
    assert pages == 3


def test_blob_redirect_is_followed_without_credentials(htpasswd_upstream: Upstream, oci_layout: Path,
                                                       make_proxy: ProxyFactory,
                                                       make_redirecting_upstream: object, tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[100_000])
    push(htpasswd_upstream, oci_layout, "1", "org/app")
    front = make_redirecting_upstream(htpasswd_upstream)  # type: ignore[operator]
    user, password = next(iter(htpasswd_upstream.users.items()))
    proxy = make_proxy(mapped("quay.io", front, username=user, password=password))

    pull(proxy.host, "quay.io/org/app:1", tmp_path / "out")
    assert sorted(front.redirected) == sorted(image.blob_digests)
    assert front.blobstore_requests
    for request in front.blobstore_requests:
        assert "authorization" not in request["headers"]
        assert "cookie" not in request["headers"]
