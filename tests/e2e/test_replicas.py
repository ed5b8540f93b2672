"""Three replicas, one cache: one PostgreSQL database and one S3 bucket (moto), with real upstreams and real clients.

Each test starts its own replicas on a fresh database and a fresh bucket, so
one test's kills and outages never reach another. The figures the closing
note quotes (upstream GETs, propagation delay, takeover time) are printed;
`pytest -s` shows them.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ..s3server import S3Server
from .faults import FaultyUpstream
from .http import concurrent_gets, gather_gets, get
from .images import ImageInfo, build_image, push, sha256_digest
from .replicas import Replicas
from .scrape import fetches_done
from .test_shared_fetch import settled
from .tools import skopeo, skopeo_ok, wait_until
from .upstream import Upstream

MiB = 1024 * 1024
ReplicasFactory = Callable[..., Replicas]


@pytest.fixture
def make_replicas(tmp_path: Path, pg_url: str, s3: S3Server) -> Iterator[ReplicasFactory]:
    """Factory: make_replicas(config, *, count=3, redirect=False) -> started Replicas on a fresh database and bucket."""
    made: list[Replicas] = []

    def make(config: dict[str, Any], *, count: int = 3, redirect: bool = False) -> Replicas:
        replicas = Replicas(tmp_path / "replicas", config, pg_url=pg_url, s3=s3, bucket=s3.fresh_bucket(),
                            count=count, redirect=redirect)
        made.append(replicas)
        replicas.start()
        return replicas

    yield make
    for replicas in made:
        replicas.stop()
        replicas.empty_bucket()


def mapped(upstream: Upstream | FaultyUpstream, address: str = "quay.io") -> dict[str, Any]:
    realms = upstream.token_realms if isinstance(upstream, Upstream) else []
    return {"registries": [{"address": address, "endpoint": upstream.url, "token_realms": realms}]}


def pull(host: str, ref: str, dest: Path) -> None:
    skopeo_ok("copy", "--retry-times=0", "--src-tls-verify=false", "--src-no-creds", f"docker://{host}/{ref}",
              f"dir:{dest}")


def assert_pulled(dest: Path, image: ImageInfo) -> None:
    """The copy in ``dest`` is the image: its manifest bytes, and every blob hashing to its digest."""
    assert (dest / "manifest.json").read_bytes() == image.manifest_bytes
    for digest in image.blob_digests:
        assert sha256_digest((dest / digest.removeprefix("sha256:")).read_bytes()) == digest, digest


def blob_gets(upstream: Upstream, image: ImageInfo) -> dict[str, int]:
    return {digest: upstream.count_requests("GET", f"/blobs/{digest}") for digest in image.blob_digests}


def test_an_image_pulled_through_one_replica_costs_the_others_no_upstream_get(
        plain_upstream: Upstream, oci_layout: Path, make_replicas: ReplicasFactory, tmp_path: Path) -> None:
    # 10 MiB: more than one 8 MiB part of a multipart upload.
    image = build_image(oci_layout, "1", layer_sizes=[10 * MiB, 300_000], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    replicas = make_replicas(mapped(plain_upstream))

    pull(replicas[0].host, "quay.io/org/app:1", tmp_path / "replica-1")
    assert_pulled(tmp_path / "replica-1", image)
    settled(plain_upstream)
    assert blob_gets(plain_upstream, image) == dict.fromkeys(image.blob_digests, 1)
    manifest_gets = plain_upstream.count_requests("GET", "/manifests/1")

    for n in (2, 3):
        pull(replicas[n - 1].host, "quay.io/org/app:1", tmp_path / f"replica-{n}")
        assert_pulled(tmp_path / f"replica-{n}", image)
    settled(plain_upstream)
    print(f"\nupstream GETs per blob after pulls through replicas 1, 2, 3: {blob_gets(plain_upstream, image)}")
    assert blob_gets(plain_upstream, image) == dict.fromkeys(image.blob_digests, 1)
    assert plain_upstream.count_requests("GET", "/manifests/1") == manifest_gets
    assert all(replicas.blob_visible(digest) for digest in image.blob_digests)
    assert replicas.unverified_objects() == []


def test_thirty_cold_gets_spread_over_three_replicas_make_one_upstream_get(
        plain_upstream: Upstream, oci_layout: Path, make_replicas: ReplicasFactory) -> None:
    image = build_image(oci_layout, "herd", layer_sizes=[24 * MiB], uncompressed=True)
    push(plain_upstream, oci_layout, "herd", "org/herd")
    replicas = make_replicas(mapped(plain_upstream))
    digest = image.layers[0][0]
    settled(plain_upstream)
    before = plain_upstream.count_requests("GET", f"/blobs/{digest}")

    results = gather_gets([f"{replicas[n % 3].url}/v2/quay.io/org/herd/blobs/{digest}" for n in range(30)])

    assert [(r.status, r.digest) for r in results] == [(200, digest)] * 30, [r.error for r in results]
    settled(plain_upstream)
    gets = plain_upstream.count_requests("GET", f"/blobs/{digest}") - before
    waits = [replicas.metric(n, "registry_proxy_fill_waits_total") for n in range(3)]
    print(f"\n30 cold GETs over 3 replicas: {gets} upstream GET(s); fill waits per replica {waits}")
    assert gets == 1
    wait_until(lambda: replicas.blob_visible(digest), what="the blob committed to the bucket")
    assert replicas.unverified_objects() == []


def test_a_credential_added_on_replica_1_is_used_by_replica_3_within_a_second(
        htpasswd_upstream: Upstream, oci_layout: Path, make_replicas: ReplicasFactory) -> None:
    image = build_image(oci_layout, "1")
    push(htpasswd_upstream, oci_layout, "1", "team/tool")
    replicas = make_replicas(mapped(htpasswd_upstream, "registry.example.com"))
    path = "/v2/registry.example.com/team/tool/manifests/1"
    assert get(replicas[2].host, path).status == 401  # no credential yet

    user, password = next(iter(htpasswd_upstream.users.items()))
    replicas.admin(0).add("registry.example.com", user, password)
    answered = time.monotonic()
    # Polled every 10 ms: the delay is known to within one poll and one request.
    attempts = 0
    while (reply := get(replicas[2].host, path)).status != 200 and time.monotonic() < answered + 1.0:
        attempts += 1
        time.sleep(0.01)
    delay = time.monotonic() - answered
    print(f"\ncredential added on replica 1 used by replica 3 after {delay * 1000:.0f} ms ({attempts} refused pulls)")
    assert reply.status == 200, f"replica 3 still answers {reply.status} {delay:.2f} s after the API answered"
    assert delay <= 1.0
    assert reply.body == image.manifest_bytes


def test_a_replica_killed_mid_fill_leaves_no_partial_object_and_another_replica_takes_over(
        make_faulty_upstream: Callable[..., FaultyUpstream], make_replicas: ReplicasFactory, tmp_path: Path) -> None:
    # ~6 MiB/s for 20 MiB: the fill takes about 3 s, with the first 8 MiB part uploaded after about 1.3 s.
    fake = make_faulty_upstream("slow", layer_size=20 * MiB, piece=256 * 1024, delay=0.04)
    replicas = make_replicas(mapped(fake, "fault.example"))
    digest = fake.layer_digest
    ref = "fault.example/fault/app:1"
    blob_url = f"/v2/fault.example/fault/app/blobs/{digest}"

    with ThreadPoolExecutor(2) as pool:
        doomed = pool.submit(skopeo, "copy", "--retry-times=0", "--src-tls-verify=false", "--src-no-creds",
                             f"docker://{replicas[0].host}/{ref}", f"dir:{tmp_path / 'doomed'}")
        wait_until(lambda: fake.blob_gets.get(digest, 0) == 1 and replicas.open_uploads(),
                   what="replica 1's fill streaming into a multipart upload")
        # A client of replica 2 asks meanwhile: replica 2 waits on replica 1's fill rather than fetching too.
        waiter = pool.submit(concurrent_gets, replicas[1].url + blob_url, 1)
        wait_until(lambda: replicas.metric(1, "registry_proxy_fill_waits_total") >= 1,
                   what="replica 2 waiting on replica 1's fill")
        assert fake.blob_gets[digest] == 1
        assert not replicas.blob_visible(digest), "the fill ended before the kill: make the upstream slower"

        replicas[0].kill()
        killed = time.monotonic()
        assert not replicas.blob_visible(digest)
        wait_until(lambda: fake.blob_gets.get(digest, 0) >= 2, what="another replica taking the fill over")
        takeover = time.monotonic() - killed
        assert doomed.result().returncode != 0, "the pull through replica 1 should have broken off"
        assert not replicas.blob_visible(digest)

        pull(replicas[1].host, ref, tmp_path / "retried")
        [waited] = waiter.result()

    print(f"\nreplica 1 killed mid-fill: replica 2 fetched the blob {takeover:.2f} s later; "
          f"{fake.blob_gets[digest]} upstream GETs in all")
    assert (waited.status, waited.digest) == (200, digest), waited.error
    assert sha256_digest((tmp_path / "retried" / digest.removeprefix("sha256:")).read_bytes()) == digest
    assert fake.blob_gets[digest] == 2  # replica 1's, broken off, and replica 2's: the pull joined it
    wait_until(lambda: fetches_done(replicas[1]) and replicas.blob_visible(digest),
               what="replica 2's fill committed")
    assert replicas.unverified_objects() == []

    left = replicas.open_uploads()
    replicas[0].start()  # its janitor runs at start
    wait_until(lambda: not replicas.open_uploads(), timeout=15, what="no multipart upload left open")
    print(f"multipart uploads open before replica 1's restart: {len(left)}; after: 0")


def test_a_restarted_replica_aborts_the_upload_of_its_killed_fill_when_nobody_took_over(
        make_faulty_upstream: Callable[..., FaultyUpstream], make_replicas: ReplicasFactory) -> None:
    fake = make_faulty_upstream("slow", layer_size=20 * MiB, piece=256 * 1024, delay=0.04)
    replicas = make_replicas(mapped(fake, "fault.example"), count=1)
    digest = fake.layer_digest

    with ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(concurrent_gets, f"{replicas[0].url}/v2/fault.example/fault/app/blobs/{digest}", 1)
        wait_until(replicas.open_uploads, what="the fill streaming into a multipart upload")
        replicas[0].kill()
        [broken] = doomed.result()
    assert broken.digest != digest
    assert replicas.open_uploads(), "only the janitor is left to abort the killed fill's upload"
    assert not replicas.blob_visible(digest)

    replicas[0].start()  # its janitor runs at start
    wait_until(lambda: not replicas.open_uploads(), timeout=15, what="the janitor aborting the upload")
    assert not replicas.blob_visible(digest)


def test_with_s3_down_the_local_tier_still_serves_and_the_metrics_show_the_failure(
        plain_upstream: Upstream, oci_layout: Path, make_replicas: ReplicasFactory, s3: S3Server) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[2 * MiB, MiB], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    replicas = make_replicas(mapped(plain_upstream), count=2)
    local, elsewhere = image.layers[0][0], image.layers[1][0]

    def fetch(n: int, digest: str) -> tuple[int, str | None]:
        [result] = concurrent_gets(f"{replicas[n].url}/v2/quay.io/org/app/blobs/{digest}", 1)
        return result.status, result.digest

    assert fetch(0, local) == (200, local)  # now on replica 1's local tier
    assert fetch(1, elsewhere) == (200, elsewhere)  # in the bucket, and only on replica 2's local tier
    wait_until(lambda: all(fetches_done(replicas[n]) for n in range(2))
               and replicas.blob_visible(local) and replicas.blob_visible(elsewhere), what="both blobs committed")

    s3.stop()
    try:
        assert fetch(0, local) == (200, local)
        before = replicas.metric(0, "registry_proxy_storage_errors_total", backend="s3")
        status, _ = fetch(0, elsewhere)
        after = replicas.metric(0, "registry_proxy_storage_errors_total", backend="s3")
    finally:
        s3.start()
    print(f"\nS3 down: the local tier served; a blob only in the bucket answered {status}; "
          f"storage errors {before:.0f} -> {after:.0f}")
    # An error answer the client can retry on, before any header of a body it could not finish.
    assert status == 503
    assert after > before


def test_with_redirect_a_warm_blob_get_sends_the_client_to_the_bucket(
        plain_upstream: Upstream, oci_layout: Path, make_replicas: ReplicasFactory, s3: S3Server,
        tmp_path: Path) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[3 * MiB], uncompressed=True)
    push(plain_upstream, oci_layout, "1", "org/app")
    replicas = make_replicas(mapped(plain_upstream), count=2, redirect=True)
    layer = image.layers[0][0]

    pull(replicas[0].host, "quay.io/org/app:1", tmp_path / "cold")
    assert_pulled(tmp_path / "cold", image)
    wait_until(lambda: all(replicas.blob_visible(digest) for digest in image.blob_digests), what="blobs committed")

    reply = get(replicas[1].host, f"/v2/quay.io/org/app/blobs/{layer}")
    assert reply.status == 307, (reply.status, reply.body[:200])
    location = reply.headers["location"]
    assert location.startswith(f"{s3.endpoint_url}/"), location
    with urllib.request.urlopen(location, timeout=30) as stored:
        assert "sha256:" + hashlib.sha256(stored.read()).hexdigest() == layer

    pull(replicas[1].host, "quay.io/org/app:1", tmp_path / "warm")
    assert_pulled(tmp_path / "warm", image)
    # skopeo was sent to the bucket for every blob too (the access log line of each answer).
    redirects = {digest: replicas[1].log_text().count(f'/blobs/{digest}" 307 ') for digest in image.blob_digests}
    assert redirects == {image.config_digest: 1, layer: 2}, redirects
    settled(plain_upstream)
    assert blob_gets(plain_upstream, image) == dict.fromkeys(image.blob_digests, 1)
