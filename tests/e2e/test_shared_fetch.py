"""One layer, many names: a blob is downloaded once, whichever repository asks, and served only where it belongs."""

from __future__ import annotations

from pathlib import Path

from .http import concurrent_gets, gather_gets, get
from .images import build_image, push
from .proxyproc import ProxyFactory
from .upstream import Upstream


def settled(upstream: Upstream) -> None:
    """Every request the upstream answered so far is in its access log.

    A request made after them is logged after them, so once it shows up a
    late line can no longer change a count.
    """
    before = upstream.count_requests("GET", "/v2/")
    upstream.request("GET", "/v2/")
    assert upstream.wait_requests("GET", "/v2/", at_least=before + 1, timeout=10) == before + 1


def test_one_blob_through_two_repository_names_is_fetched_once(plain_upstream: Upstream, oci_layout: Path,
                                                                 make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[8 * 1024 * 1024], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    push(plain_upstream, oci_layout, "1", "org/mirror")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    digest = image.layers[0][0]
    settled(plain_upstream)

    def heads() -> dict[str, int]:
        return {repo: plain_upstream.count_requests("HEAD", f"/org/{repo}/blobs/{digest}") for repo in ("app", "mirror")}

    pushed = heads()  # pushing checks for the blob too
    urls = [f"{proxy.url}/v2/quay.io/org/{repo}/blobs/{digest}" for repo in ("app", "mirror") for _ in range(10)]
    results = gather_gets(urls)

    assert [r.digest for r in results] == [digest] * 20, [r.error for r in results]
    settled(plain_upstream)
    assert plain_upstream.count_requests("GET", f"/blobs/{digest}") == 1
    # The name that did not start the download was cleared by one HEAD of its own before following it.
    cleared = {repo: count - pushed[repo] for repo, count in heads().items()}
    assert sorted(cleared.values()) == [0, 1], cleared


def test_a_cached_blob_is_not_served_for_a_repository_that_lacks_it(plain_upstream: Upstream, oci_layout: Path,
                                                                      make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[64 * 1024], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    build_image(oci_layout, "2", layer_sizes=[1024], uncompressed=True)
    push(plain_upstream, oci_layout, "2", "org/other")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    digest = image.layers[0][0]

    assert get(proxy.host, f"/v2/quay.io/org/app/blobs/{digest}").status == 200
    refused = get(proxy.host, f"/v2/quay.io/org/other/blobs/{digest}")
    assert refused.status == 404 and refused.error_codes == ["BLOB_UNKNOWN"]
    settled(plain_upstream)
    assert plain_upstream.count_requests("GET", f"/blobs/{digest}") == 1


def test_a_herd_costs_one_upstream_get_and_little_memory_per_stream(plain_upstream: Upstream, oci_layout: Path,
                                                                    make_proxy: ProxyFactory) -> None:
    """A regression guard with room for noise; bench/ measures the real figures.

    Streams are sent from the cache file (or, at the download's head, from
    the download's own memory), so a client costs well under a MiB of its
    own however large the blob.
    """
    streams = 40
    image = build_image(oci_layout, "herd", layer_sizes=[24 * 1024 * 1024], uncompressed=True)
    push(plain_upstream, oci_layout, "herd", "org/herd")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    digest = image.layers[0][0]
    url = f"{proxy.url}/v2/quay.io/org/herd/blobs/{digest}"
    get(proxy.host, "/v2/")
    before = proxy.rss_kb()

    cold = concurrent_gets(url, streams)
    warm = concurrent_gets(url, streams)

    assert [r.digest for r in cold + warm] == [digest] * (2 * streams), [r.error for r in cold + warm]
    settled(plain_upstream)
    assert plain_upstream.count_requests("GET", f"/blobs/{digest}") == 1
    per_stream_mib = (proxy.hwm_kb() - before) / 1024 / streams
    assert per_stream_mib < 1.0, f"{per_stream_mib:.2f} MiB of peak RSS per concurrent stream"
