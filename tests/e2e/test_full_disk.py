"""A proxy whose data_dir is a real 4 MiB tmpfs: pulls and admin writes when the disk fills, and after it frees.

A pull gets the verified content or an error before its headers, never a
500 and never a wrong body; an admin write gets 507 and changes nothing; and
once space frees, caching goes on by itself with nothing partial left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..small_disk import fill, small_disk
from .admin import Admin, new_token
from .http import concurrent_gets, get
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .scrape import fetches_done, scrape
from .tools import wait_until
from .upstream import Upstream


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """Requested before make_proxy, so it is unmounted after the proxy stopped."""
    with small_disk(tmp_path / "disk", "4m") as root:
        yield root


def proxy_on(disk: Path, make_proxy: ProxyFactory, upstream: Upstream, token: str = "") -> ProxyProcess:
    env = {"REGISTRY_PROXY_ADMIN_TOKEN": token or new_token()}
    return make_proxy({"data_dir": str(disk / "data"),
                       "registries": [{"address": "quay.io", "endpoint": upstream.url}]}, env=env)


def leftovers(proxy: ProxyProcess) -> list[Path]:
    return [p for p in (proxy.data_dir / "cache").rglob("*") if p.is_file() and "repos" not in p.parts]


def blob_files(proxy: ProxyProcess, digest: str) -> list[Path]:
    return list((proxy.data_dir / "cache" / "blobs").rglob(digest.split(":")[1]))


def disk_full(proxy: ProxyProcess, what: str) -> float:
    return scrape(proxy)("registry_proxy_disk_full_total", what=what)


def test_a_blob_larger_than_the_free_disk_is_streamed_whole_and_verified_never_a_500(
        disk: Path, plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "big", layer_sizes=[6 * 1024 * 1024], uncompressed=True)
    push(plain_upstream, oci_layout, "big", "org/big")
    proxy = proxy_on(disk, make_proxy, plain_upstream)
    digest, _ = image.layers[0]

    results = concurrent_gets(f"{proxy.url}/v2/quay.io/org/big/blobs/{digest}", 3)
    # A 503 before the headers would be honest too; a 500, or a complete wrong body, never.
    assert all(r.status in (200, 503) for r in results), results
    assert [r.digest for r in results if r.status == 200] == [digest] * 3, results

    wait_until(lambda: fetches_done(proxy), what="the download to end")
    assert blob_files(proxy, digest) == [] and leftovers(proxy) == []
    assert disk_full(proxy, "cache") >= 1
    assert scrape(proxy)("registry_proxy_uncached_blobs_total") >= 1


def test_with_the_disk_full_pulls_are_served_uncached_and_caching_resumes_once_it_frees(
        disk: Path, plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[64 * 1024])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = proxy_on(disk, make_proxy, plain_upstream)
    manifest_path = "/v2/quay.io/org/app/manifests/1"
    blob_url = f"{proxy.url}/v2/quay.io/org/app/blobs/{image.layers[0][0]}"
    accept = "application/vnd.oci.image.manifest.v1+json"
    filler = fill(disk)

    cold = get(proxy.host, manifest_path, Accept=accept)
    assert cold.status == 200, cold.body[:300]
    assert "sha256:" + hashlib.sha256(cold.body).hexdigest() == image.manifest_digest
    [blob] = concurrent_gets(blob_url, 1)
    assert (blob.status, blob.digest) == (200, image.layers[0][0])
    wait_until(lambda: fetches_done(proxy), what="the download to end")
    assert leftovers(proxy) == []
    assert disk_full(proxy, "cache") >= 2

    filler.unlink()
    # Nothing of the full-disk pulls was kept: they are fetched, and cached, now.
    again = get(proxy.host, manifest_path, Accept=accept)
    assert (again.status, again.headers.get("x-registry-proxy-cache")) == (200, "miss")
    assert [r.cache for r in concurrent_gets(blob_url, 1)] == ["miss"]
    wait_until(lambda: fetches_done(proxy), what="the download to end")
    warm = get(proxy.host, manifest_path, Accept=accept)
    assert (warm.status, warm.headers.get("x-registry-proxy-cache"), warm.body) == (200, "hit", cold.body)
    assert [(r.cache, r.digest) for r in concurrent_gets(blob_url, 1)] == [("hit", image.layers[0][0])]


def test_admin_writes_on_a_full_disk_get_507_and_change_nothing(
        disk: Path, plain_upstream: Upstream, make_proxy: ProxyFactory) -> None:
    token = new_token()
    proxy = proxy_on(disk, make_proxy, plain_upstream, token)
    admin = Admin(proxy.host, token)
    filler = fill(disk)

    reply = admin.call("POST", "/registries", {"address": "ghcr.io", "username": "u", "password": "p"})
    assert reply.status == 507, reply.body
    error = reply.json()["error"]
    assert (error["code"], error["field"]) == ("insufficient_storage", None)
    assert "disk is full" in error["message"]
    reply = admin.call("PUT", "/settings/registry.whitelist", {"value": "ghcr.io"})
    assert reply.status == 507, reply.body
    assert admin.call("GET", "/registries").json()["registries"] == []
    assert admin.call("GET", "/settings/registry.whitelist").json()["value"] == ""
    assert disk_full(proxy, "state") == 2
    assert "cannot rollback" not in proxy.log_text()

    filler.unlink()
    assert admin.add("ghcr.io", "u", "p")["address"] == "ghcr.io"
