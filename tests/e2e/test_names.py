"""How names resolve to registries: prefixes, mirrors, ?ns=, the default and the whitelist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .http import call, get
from .images import build_image, push
from .proxyproc import ProxyFactory
from .upstream import Upstream

UpstreamFactory = Callable[..., Upstream]


def test_unprefixed_mirror_request_goes_to_docker_hub_with_library(plain_upstream: Upstream, oci_layout: Path,
                                                                   make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "22.04")
    push(plain_upstream, oci_layout, "22.04", "library/ubuntu")
    # Docker Hub itself is played by the local registry.
    proxy = make_proxy({"registries": [{"address": "index.docker.io", "endpoint": plain_upstream.url}]})

    # What dockerd sends with "registry-mirrors" for `docker pull ubuntu:22.04`.
    for path in ("/v2/library/ubuntu/manifests/22.04", "/v2/ubuntu/manifests/22.04",
                 "/v2/docker.io/library/ubuntu/manifests/22.04", "/v2/registry-1.docker.io/ubuntu/manifests/22.04",
                 "/v2/library/ubuntu/manifests/22.04?ns=docker.io"):
        reply = get(proxy.host, path)
        assert reply.status == 200, (path, reply.body)
        assert reply.body == image.manifest_bytes


def test_ns_names_the_registry_for_containerd_mirrors(make_upstream: UpstreamFactory, oci_layout: Path,
                                                      make_proxy: ProxyFactory) -> None:
    quay, ghcr = make_upstream("quay"), make_upstream("ghcr")
    quay_image = build_image(oci_layout, "1", layer_sizes=[1000])
    push(quay, oci_layout, "1", "org/app")
    ghcr_image = build_image(oci_layout, "2", layer_sizes=[2000])
    push(ghcr, oci_layout, "2", "org/app")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": quay.url},
                                       {"address": "ghcr.io", "endpoint": ghcr.url}]})

    assert get(proxy.host, "/v2/org/app/manifests/1?ns=quay.io").body == quay_image.manifest_bytes
    assert get(proxy.host, "/v2/org/app/manifests/2?ns=ghcr.io").body == ghcr_image.manifest_bytes
    # containerd with override_path sends the prefix too; the prefix wins.
    assert get(proxy.host, "/v2/ghcr.io/org/app/manifests/2?ns=quay.io").body == ghcr_image.manifest_bytes
    # Same repository name, other registry: never the other's cached content.
    assert get(proxy.host, "/v2/org/app/manifests/1?ns=ghcr.io").status == 404


def test_default_registry_other_than_docker_hub(make_upstream: UpstreamFactory, oci_layout: Path,
                                                make_proxy: ProxyFactory) -> None:
    internal, hub = make_upstream("internal"), make_upstream("hub")
    internal_image = build_image(oci_layout, "1", layer_sizes=[1000])
    push(internal, oci_layout, "1", "tool")
    hub_image = build_image(oci_layout, "2", layer_sizes=[2000])
    push(hub, oci_layout, "2", "library/tool")
    registries = [{"address": "registry.internal.example", "endpoint": internal.url},
                  {"address": "docker.io", "endpoint": hub.url}]
    proxy = make_proxy({"settings": {"registry.default": "registry.internal.example"}, "registries": registries})

    # One-part names get library/ only on Docker Hub.
    reply = get(proxy.host, "/v2/tool/manifests/1")
    assert reply.status == 200 and reply.body == internal_image.manifest_bytes

    # Cache keys hold the resolved registry: after switching the default back
    # to Docker Hub, the same name is Docker Hub's, not what is cached.
    proxy.stop()
    config = proxy.config
    config["settings"] = {"registry": {"default": "docker.io"}}
    proxy.config_path.write_text(yaml.safe_dump(config))
    proxy.start()
    assert get(proxy.host, "/v2/tool/manifests/1").status == 404
    assert get(proxy.host, "/v2/tool/manifests/2").body == hub_image.manifest_bytes


def test_whitelist_denies_other_registries_and_names_the_setting(plain_upstream: Upstream, oci_layout: Path,
                                                                  make_proxy: ProxyFactory) -> None:
    build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "library/app")
    push(plain_upstream, oci_layout, "1", "org/app")
    registries = [{"address": "quay.io", "endpoint": plain_upstream.url},
                  {"address": "docker.io", "endpoint": plain_upstream.url}]
    proxy = make_proxy({"settings": {"registry.whitelist": "quay.io"}, "registries": registries})

    assert get(proxy.host, "/v2/quay.io/org/app/manifests/1").status == 200
    denied = get(proxy.host, "/v2/ghcr.io/org/app/manifests/1")
    assert denied.status == 403 and denied.error_codes == ["DENIED"]
    assert "ghcr.io" in denied.error_message and "registry.whitelist" in denied.error_message
    # Docker Hub is not listed, and it is the default: unprefixed pulls say so.
    unprefixed = get(proxy.host, "/v2/library/app/manifests/1")
    assert unprefixed.status == 403
    assert "default registry docker.io" in unprefixed.error_message
    assert "registry.whitelist" in unprefixed.error_message

    hub_listed = make_proxy({"settings": {"registry.whitelist": "quay.io, index.docker.io"},
                             "registries": registries}, name="hub-listed")
    assert get(hub_listed.host, "/v2/library/app/manifests/1").status == 200
    assert get(hub_listed.host, "/v2/docker.io/library/app/manifests/1").status == 200


BAD_PATHS = [
    ("/v2/Foo/bar/manifests/1", "NAME_INVALID"),
    ("/v2/foo//bar/manifests/1", "NAME_INVALID"),
    ("/v2/foo/../bar/manifests/1", "NAME_INVALID"),
    ("/v2/foo/%2e%2e/bar/manifests/1", "NAME_INVALID"),
    ("/v2/foo%0d%0abar/manifests/1", "NAME_INVALID"),
    ("/v2/" + "a" * 256 + "/manifests/1", "NAME_INVALID"),
    ("/v2/foo/bar/manifests/-bad", "TAG_INVALID"),
    ("/v2/foo/bar/manifests/" + "t" * 129, "TAG_INVALID"),
    ("/v2/foo/bar/blobs/sha256:" + "A" * 64, "DIGEST_INVALID"),
    ("/v2/foo/bar/blobs/sha256:" + "a" * 63, "DIGEST_INVALID"),
    ("/v2/foo/bar/blobs/md5:" + "a" * 32, "DIGEST_INVALID"),
    ("/v2/foo/bar/manifests/sha256:" + "a" * 63, "DIGEST_INVALID"),
]


@pytest.fixture
def idle_proxy(make_proxy: ProxyFactory) -> object:
    # The default registry points nowhere reachable: a request that got past
    # validation would show up as a 503, not a 400.
    return make_proxy({"registries": [{"address": "docker.io", "endpoint": "http://127.0.0.1:9"}]})


@pytest.mark.parametrize("path,code", BAD_PATHS)
def test_bad_names_tags_and_digests_are_rejected_before_any_io(idle_proxy: object, path: str, code: str) -> None:
    proxy = idle_proxy
    reply = call(proxy.host, "GET", path)  # type: ignore[attr-defined]
    assert reply.status == 400, reply.body
    assert reply.error_codes == [code]
    repos = proxy.data_dir / "cache" / "repos"  # type: ignore[attr-defined]
    assert not repos.exists() or not any(repos.iterdir())


def test_push_and_delete_are_unsupported(idle_proxy: object) -> None:
    host = idle_proxy.host  # type: ignore[attr-defined]
    for method, path in (("PUT", "/v2/foo/manifests/1"), ("DELETE", "/v2/foo/manifests/1"),
                         ("POST", "/v2/foo/blobs/uploads/"), ("PATCH", "/v2/foo/blobs/uploads/x")):
        reply = call(host, method, path)
        assert reply.status == 405 and reply.error_codes == ["UNSUPPORTED"], (method, path)


def test_unconfigured_registry_on_a_private_address_is_refused(idle_proxy: object, plain_upstream: Upstream) -> None:
    # The upstream is really there, on loopback; only configuration may allow it.
    host = idle_proxy.host  # type: ignore[attr-defined]
    reply = get(host, f"/v2/{plain_upstream.host}/org/app/manifests/1")
    assert reply.status == 403 and reply.error_codes == ["DENIED"]
    assert reply.json()["errors"][0]["message"].count("non-public") == 1
    assert plain_upstream.count_requests("GET", "/manifests/1") == 0
    via_ns = get(host, "/v2/org/app/manifests/1?ns=localhost:" + plain_upstream.host.split(":")[1])
    assert via_ns.status == 403 and via_ns.error_codes == ["DENIED"]


def test_link_local_is_refused_even_for_configured_registries(make_proxy: ProxyFactory) -> None:
    # Cloud metadata services live there; no registry does.
    proxy = make_proxy({"registries": [{"address": "metadata.example", "endpoint": "http://169.254.169.254"}]})
    reply = get(proxy.host, "/v2/metadata.example/latest/manifests/meta-data")
    assert reply.status == 403 and reply.error_codes == ["DENIED"]
    assert "169.254.169.254" in reply.error_message
