"""The cache under load and under faults: single-flight, verification, staleness, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp

from .faults import FaultyUpstream
from .http import call, concurrent_gets, get
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .scrape import fetches_done, scrape
from .tools import skopeo_ok, wait_until
from .upstream import Upstream

FaultFactory = Callable[..., FaultyUpstream]


def fault_proxy(make_proxy: ProxyFactory, fake: FaultyUpstream, **config: object) -> ProxyProcess:
    return make_proxy({"registries": [{"address": "fault.example", "endpoint": fake.url}], **config})


def cached_files(proxy: ProxyProcess, digest: str) -> list[Path]:
    return list((proxy.data_dir / "cache").rglob(digest.split(":")[1]))


def leftovers(proxy: ProxyProcess) -> list[Path]:
    return list((proxy.data_dir / "cache" / "tmp").iterdir())


def test_concurrent_cold_gets_make_one_upstream_fetch(plain_upstream: Upstream, oci_layout: Path,
                                                      make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[8 * 1024 * 1024], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    digest = image.layers[0][0]

    results = concurrent_gets(f"{proxy.url}/v2/quay.io/org/app/blobs/{digest}", 20)
    assert [r.digest for r in results] == [digest] * 20, [r.error for r in results]
    # Once no fetch is in flight none is left to start late; every upstream
    # request the proxy made was answered, and counted, before its client was.
    wait_until(lambda: fetches_done(proxy), what="the fetch to end")
    assert cached_files(proxy, digest)
    assert scrape(proxy)("registry_proxy_upstream_request_duration_seconds_count", registry="quay.io") == 1
    assert plain_upstream.wait_requests("GET", f"/blobs/{digest}") == 1


def test_joined_clients_stream_while_the_one_fetch_runs(make_faulty_upstream: FaultFactory,
                                                        make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("slow", layer_size=512 * 1024, piece=16 * 1024, delay=0.01)
    proxy = fault_proxy(make_proxy, fake)
    results = concurrent_gets(f"{proxy.url}/v2/fault.example/fault/app/blobs/{fake.layer_digest}", 20)
    assert [r.digest for r in results] == [fake.layer_digest] * 20
    assert sorted(r.cache or "" for r in results) == ["joined"] * 19 + ["miss"]
    assert fake.blob_gets[fake.layer_digest] == 1


def test_large_blob_streams_with_flat_memory(plain_upstream: Upstream, oci_layout: Path,
                                             make_proxy: ProxyFactory) -> None:
    size = 200 * 1024 * 1024
    image = build_image(oci_layout, "big", layer_sizes=[size], uncompressed=True)
    push(plain_upstream, oci_layout, "big", "org/big")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    digest, blob_size = image.layers[0]
    url = f"{proxy.url}/v2/quay.io/org/big/blobs/{digest}"

    get(proxy.host, "/v2/")
    before = proxy.hwm_kb()
    cold = concurrent_gets(url, 2)
    cold_peak = proxy.hwm_kb()
    warm = concurrent_gets(url, 1)
    warm_peak = proxy.hwm_kb()
    assert [r.digest for r in cold + warm] == [digest] * 3
    growth_mib = (warm_peak - before) / 1024
    print(f"\n200 MiB blob: peak RSS {before / 1024:.1f} MiB before, {cold_peak / 1024:.1f} MiB after two cold "
          f"streams, {warm_peak / 1024:.1f} MiB after a warm one: growth {growth_mib:.1f} MiB")
    assert blob_size > size
    assert growth_mib < 48, f"RSS grew {growth_mib:.0f} MiB while streaming a {blob_size >> 20} MiB blob"


def test_upstream_dying_mid_blob_caches_nothing(make_faulty_upstream: FaultFactory, make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("truncate")
    proxy = fault_proxy(make_proxy, fake)
    url = f"{proxy.url}/v2/fault.example/fault/app/blobs/{fake.layer_digest}"

    first = concurrent_gets(url, 1)[0]
    assert first.digest is None, "a short body must not end like a complete one"
    assert cached_files(proxy, fake.layer_digest) == []
    assert leftovers(proxy) == []
    second = concurrent_gets(url, 1)[0]
    assert second.digest is None
    assert fake.blob_gets[fake.layer_digest] == 2  # nothing was cached, so it asked again


def test_wrong_bytes_from_upstream_are_never_served_whole_or_cached(make_faulty_upstream: FaultFactory,
                                                                    make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("wrong")
    proxy = fault_proxy(make_proxy, fake)
    result = concurrent_gets(f"{proxy.url}/v2/fault.example/fault/app/blobs/{fake.layer_digest}", 1)[0]
    assert result.digest is None and result.error is not None
    assert cached_files(proxy, fake.layer_digest) == []
    assert leftovers(proxy) == []


def test_client_that_disconnects_does_not_spoil_the_fill(make_faulty_upstream: FaultFactory,
                                                         make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("slow", layer_size=512 * 1024, piece=16 * 1024, delay=0.01)
    proxy = fault_proxy(make_proxy, fake)
    url = f"{proxy.url}/v2/fault.example/fault/app/blobs/{fake.layer_digest}"

    async def leave_early() -> None:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            await resp.content.read(1024)
        # Leaving the block closes the connection mid-body.

    asyncio.run(leave_early())
    complete = concurrent_gets(url, 1)[0]
    assert complete.digest == fake.layer_digest
    assert complete.cache in ("joined", "hit")
    assert concurrent_gets(url, 1)[0].cache == "hit"
    assert fake.blob_gets[fake.layer_digest] == 1


def test_range_requests_on_cached_blobs_and_on_a_miss(make_faulty_upstream: FaultFactory,
                                                      make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("slow", layer_size=256 * 1024, piece=32 * 1024, delay=0.01)
    proxy = fault_proxy(make_proxy, fake)
    path = f"/v2/fault.example/fault/app/blobs/{fake.layer_digest}"

    miss = call(proxy.host, "GET", path, {"Range": "bytes=100000-100099"})
    assert miss.status == 206 and miss.body == fake.layer_bytes[100000:100100]
    assert miss.headers["content-range"] == f"bytes 100000-100099/{fake.layer_size}"
    wait_until(lambda: fetches_done(proxy), what="the fill to finish")
    hit = call(proxy.host, "GET", path, {"Range": "bytes=-10"})
    assert hit.status == 206 and hit.body == fake.layer_bytes[-10:]
    assert hit.headers["x-registry-proxy-cache"] == "hit"
    beyond = call(proxy.host, "GET", path, {"Range": f"bytes={fake.layer_size}-"})
    assert beyond.status == 416 and beyond.error_codes == ["RANGE_INVALID"]
    assert beyond.headers["content-range"] == f"bytes */{fake.layer_size}"
    head = call(proxy.host, "HEAD", path)
    assert head.status == 200 and head.headers["content-length"] == str(fake.layer_size)
    assert fake.blob_gets[fake.layer_digest] == 1


def test_tags_revalidate_with_head_and_fall_back_to_stale(plain_upstream: Upstream, oci_layout: Path,
                                                          make_proxy: ProxyFactory, tmp_path: Path) -> None:
    first = build_image(oci_layout, "1", layer_sizes=[1000])
    push(plain_upstream, oci_layout, "1", "org/app")
    registries = [{"address": "quay.io", "endpoint": plain_upstream.url}]
    # Within tag_ttl a tag is served from the cache; a tag_ttl of 0 s finds it
    # due for revalidation on every request, so no test waits out a TTL.
    trusting = make_proxy({"cache": {"tag_ttl": "1h"}, "registries": registries}, name="trusting")
    proxy = make_proxy({"cache": {"tag_ttl": "0s", "max_stale": "1h"}, "registries": registries})
    strict = make_proxy({"cache": {"tag_ttl": "0s", "max_stale": "0s"}, "registries": registries}, name="strict")
    path = "/v2/quay.io/org/app/manifests/1"
    assert get(trusting.host, path).headers["x-registry-proxy-cache"] == "miss"
    assert get(trusting.host, path).headers["x-registry-proxy-cache"] == "hit"
    assert get(proxy.host, path).headers["x-registry-proxy-cache"] == "miss"
    assert get(strict.host, path).status == 200

    gets = plain_upstream.wait_requests("GET", "/manifests/1", at_least=3)  # one miss per proxy
    revalidated = get(proxy.host, path)
    assert revalidated.headers["x-registry-proxy-cache"] == "revalidated"
    assert plain_upstream.wait_requests("HEAD", "/manifests/1") >= 1
    assert plain_upstream.count_requests("GET", "/manifests/1") == gets

    second = build_image(oci_layout, "1", layer_sizes=[2000])
    push(plain_upstream, oci_layout, "1", "org/app")
    assert get(proxy.host, path).body == second.manifest_bytes != first.manifest_bytes
    assert get(trusting.host, path).body == first.manifest_bytes  # still within its tag_ttl
    skopeo_ok("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{proxy.host}/quay.io/org/app:1",
              f"dir:{tmp_path / 'warm'}")

    plain_upstream.stop()
    stale = get(proxy.host, path)
    assert stale.status == 200 and stale.body == second.manifest_bytes
    assert stale.headers["x-registry-proxy-cache"] == "stale"
    assert stale.headers["warning"].startswith("110 ")
    skopeo_ok("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{proxy.host}/quay.io/org/app:1",
              f"dir:{tmp_path / 'offline'}")
    down = get(strict.host, path)
    assert down.status == 503 and down.error_codes == ["UNAVAILABLE"]
    assert "quay.io" in down.error_message


def test_restart_cleans_partial_downloads_and_keeps_the_cache(plain_upstream: Upstream, oci_layout: Path,
                                                              make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[50_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    blob = f"/v2/quay.io/org/app/blobs/{image.layers[0][0]}"
    assert get(proxy.host, blob).status == 200
    proxy.kill()
    (proxy.data_dir / "cache" / "tmp" / "part-crashed").write_bytes(b"half a blob")
    proxy.start()
    assert leftovers(proxy) == []
    reply = get(proxy.host, blob)
    assert reply.headers["x-registry-proxy-cache"] == "hit"
    assert plain_upstream.count_requests("GET", blob.split("/v2/quay.io")[1]) == 1


def test_cache_size_is_bounded_by_lru_eviction(plain_upstream: Upstream, oci_layout: Path,
                                               make_proxy: ProxyFactory) -> None:
    layers = []
    for tag in ("a", "b", "c"):
        image = build_image(oci_layout, tag, layer_sizes=[600_000], uncompressed=True)
        push(plain_upstream, oci_layout, tag, "org/app")
        layers.append(image.layers[0][0])
    proxy = make_proxy({"cache": {"max_size": "1500KB"},
                        "registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    for digest in layers:
        assert get(proxy.host, f"/v2/quay.io/org/app/blobs/{digest}").status == 200
    used = sum(p.stat().st_size for p in (proxy.data_dir / "cache" / "blobs").rglob("*") if p.is_file())
    assert used <= 1_500_000
    # The least recently used one went; asking again goes upstream.
    assert get(proxy.host, f"/v2/quay.io/org/app/blobs/{layers[0]}").headers["x-registry-proxy-cache"] == "miss"
    assert get(proxy.host, f"/v2/quay.io/org/app/blobs/{layers[2]}").headers["x-registry-proxy-cache"] == "hit"
