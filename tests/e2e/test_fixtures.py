"""Self-tests of the e2e fixtures, without the proxy.

If these fail, e2e failures elsewhere say nothing about the product.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from .faults import FaultyUpstream, RedirectingUpstream
from .images import MT_LAYER_TAR, build_image, build_index, push, read_blob, sha256_digest
from .proxyproc import REPO_ROOT, ProxyFactory
from .tokenserver import TokenServer
from .tools import reap, require_binary, skopeo, skopeo_ok, spawn, wait_http
from .upstream import MANIFEST_ACCEPT, Upstream

UPSTREAM_KINDS = ["plain_upstream", "htpasswd_upstream", "tls_upstream", "token_upstream"]


def test_require_binary_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_binary("no-such-binary-e2e")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_binary("no-such-binary-e2e")


def test_wait_http_reports_early_exit_with_log(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-c", "print('boom: bad config')"], tmp_path / "child.log")
    try:
        with pytest.raises(pytest.fail.Exception, match="boom: bad config"):
            wait_http("http://127.0.0.1:9/v2/", timeout=10, proc=proc)
    finally:
        reap(proc)


def test_images_are_valid_and_seed_is_reproducible(tmp_path: Path) -> None:
    first = build_image(tmp_path / "a", "v1", layer_sizes=[1000, 3000], seed=b"s")
    again = build_image(tmp_path / "b", "v1", layer_sizes=[1000, 3000], seed=b"s")
    other = build_image(tmp_path / "a", "v2", layer_sizes=[1000, 3000])
    assert first.manifest_bytes == again.manifest_bytes
    assert other.manifest_digest != first.manifest_digest

    config = json.loads(first.config_bytes)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    for (digest, size), diff_id, expected in zip(first.layers, config["rootfs"]["diff_ids"], [1000, 3000], strict=True):
        with read_blob(tmp_path / "a", digest) as fh:
            blob = fh.read()
        assert sha256_digest(blob) == digest and len(blob) == size
        assert sha256_digest(gzip.decompress(blob)) == diff_id
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            (member,) = tar.getmembers()
            assert member.size == expected

    plain = build_image(tmp_path / "a", "raw", layer_sizes=[5000], uncompressed=True)
    assert json.loads(plain.manifest_bytes)["layers"][0]["mediaType"] == MT_LAYER_TAR
    assert plain.diff_ids == [plain.layers[0][0]]
    # Both tags still resolve, and skopeo reads the layout as valid.
    for tag, info in [("v1", first), ("v2", other), ("raw", plain)]:
        raw = skopeo_ok("inspect", "--raw", f"oci:{tmp_path / 'a'}:{tag}", text=False).stdout
        assert raw == info.manifest_bytes


def _pull_creds(upstream: Upstream) -> str | None:
    return "{}:{}".format(*next(iter(upstream.users.items()))) if upstream.users else None


@pytest.mark.parametrize("kind", UPSTREAM_KINDS)
def test_push_and_pull_roundtrip(kind: str, request: pytest.FixtureRequest, oci_layout: Path, tmp_path: Path) -> None:
    upstream: Upstream = request.getfixturevalue(kind)
    image = build_image(oci_layout, "v1", layer_sizes=[2048, 8192])
    index_digest, index_bytes, images = build_index(oci_layout, "multi", [("linux", "amd64"), ("linux", "arm64")])
    repo = "private/app" if upstream.auth == "token" else "lib/app"
    assert push(upstream, oci_layout, "v1", repo) == image.manifest_digest
    assert push(upstream, oci_layout, "multi", repo, all_platforms=True) == index_digest

    creds = _pull_creds(upstream)
    src = upstream.skopeo_flags("src", creds)
    skopeo_ok("copy", *src, f"docker://{upstream.host}/{repo}:v1", f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / "manifest.json").read_bytes() == image.manifest_bytes
    skopeo_ok("copy", "--all", *src, f"docker://{upstream.host}/{repo}:multi", f"dir:{tmp_path / 'out-multi'}")

    assert upstream.inspect_raw(repo, "v1", creds=creds) == image.manifest_bytes
    assert upstream.inspect_raw(repo, "multi", creds=creds) == index_bytes
    arm = images[1]
    assert upstream.inspect_raw(repo, arm.manifest_digest, creds=creds) == arm.manifest_bytes
    assert upstream.get_manifest(repo, "multi", creds=creds) == index_bytes

    layer_digest = image.layers[1][0]
    assert upstream.wait_requests("GET", f"/blobs/{layer_digest}") == 1
    assert upstream.count_requests("GET", f"/{repo}/manifests/v1", status=200) >= 1


def test_restart_keeps_port_and_storage(plain_upstream: Upstream, oci_layout: Path) -> None:
    image = build_image(oci_layout, "v1")
    push(plain_upstream, oci_layout, "v1", "lib/app")
    host = plain_upstream.host
    plain_upstream.kill()
    status, _, _ = _try_get(plain_upstream)
    assert status == -1
    plain_upstream.start()
    assert plain_upstream.host == host
    assert plain_upstream.get_manifest("lib/app", "v1") == image.manifest_bytes
    plain_upstream.stop()
    plain_upstream.start()
    assert plain_upstream.get_manifest("lib/app", image.manifest_digest) == image.manifest_bytes


def _try_get(upstream: Upstream) -> tuple[int, dict[str, str], bytes]:
    try:
        return upstream.request("GET", "/v2/")
    except OSError:
        return -1, {}, b""


def test_htpasswd_rejects_anonymous_and_wrong_password(htpasswd_upstream: Upstream, oci_layout: Path) -> None:
    build_image(oci_layout, "v1")
    push(htpasswd_upstream, oci_layout, "v1", "lib/app")
    ref = f"docker://{htpasswd_upstream.host}/lib/app:v1"
    assert skopeo("inspect", "--raw", *htpasswd_upstream.skopeo_flags(""), ref).returncode != 0
    assert skopeo("inspect", "--raw", *htpasswd_upstream.skopeo_flags("", "alice:wrong"), ref).returncode != 0
    status, headers, _ = htpasswd_upstream.request("GET", "/v2/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert htpasswd_upstream.count_requests("GET", "/v2/", status=401) >= 1


def test_token_policy(token_upstream: Upstream, token_server: TokenServer, oci_layout: Path, tmp_path: Path) -> None:
    build_image(oci_layout, "v1")
    push(token_upstream, oci_layout, "v1", "private/app")
    push(token_upstream, oci_layout, "v1", "public/app")
    bob = _pull_creds(token_upstream)
    assert bob is not None and bob.startswith("bob:")
    anon = token_upstream.skopeo_flags("src")

    denied = skopeo("copy", *anon, f"docker://{token_upstream.host}/private/app:v1", f"dir:{tmp_path / 'a'}")
    assert denied.returncode != 0
    skopeo_ok("copy", *anon, f"docker://{token_upstream.host}/public/app:v1", f"dir:{tmp_path / 'b'}")
    as_bob = token_upstream.skopeo_flags("src", bob)
    skopeo_ok("copy", *as_bob, f"docker://{token_upstream.host}/private/app:v1", f"dir:{tmp_path / 'c'}")

    bad_login = token_upstream.skopeo_flags("", "bob:wrong")
    wrong = skopeo("inspect", "--raw", *bad_login, f"docker://{token_upstream.host}/public/app:v1")
    assert wrong.returncode != 0
    assert any(r["status"] == 401 and r["username"] == "bob" for r in token_server.requests)
    # bob may pull but not push.
    build_image(oci_layout, "v2")
    with pytest.raises(AssertionError):
        push(token_upstream, oci_layout, "v2", "public/app", creds=bob)

    seen = [r for r in token_server.requests if r["status"] == 200]
    assert all(r["remote"] == "127.0.0.1" and r["service"] == token_server.service for r in seen)
    assert any(not r["authorization"] and "repository:private/app:pull" in r["scopes"] for r in seen)
    assert any(r["username"] == "bob" for r in seen)


def test_token_claims(token_server: TokenServer) -> None:
    token = token_server.issue(None, ["repository:private/x:pull", "repository:pub/x:pull,push"])["token"]
    header, claims = (json.loads(base64.urlsafe_b64decode(part + "==")) for part in token.split(".")[:2])
    assert header["alg"] == "ES256" and len(header["x5c"]) == 1
    assert claims["aud"] == token_server.service and claims["iss"] == token_server.issuer
    assert claims["access"] == [{"type": "repository", "name": "pub/x", "actions": ["pull"]}]


async def test_redirecting_upstream(
    token_upstream: Upstream,
    token_server: TokenServer,
    make_redirecting_upstream: Callable[[Upstream], RedirectingUpstream],
    oci_layout: Path,
    tmp_path: Path,
) -> None:
    image = build_image(oci_layout, "v1", layer_sizes=[300_000])
    push(token_upstream, oci_layout, "v1", "private/app")
    front = make_redirecting_upstream(token_upstream)
    layer, size = image.layers[0]
    async with aiohttp.ClientSession() as session:
        blob_url = f"{front.url}/v2/private/app/blobs/{layer}"
        async with session.get(blob_url, allow_redirects=False) as resp:
            assert resp.status == 401  # challenge comes through the front
            challenge = resp.headers["WWW-Authenticate"]
        assert token_server.realm in challenge
        token = token_server.issue("bob", ["repository:private/app:pull"])["token"]
        auth = {"Authorization": f"Bearer {token}", "Cookie": "session=secret"}
        async with session.get(blob_url, headers=auth, allow_redirects=False) as resp:
            assert resp.status == 307
            location = resp.headers["Location"]
        assert location.startswith(f"{front.blobstore_url}/blobstore/{layer}?")
        async with session.get(location) as resp:
            body = await resp.read()
        assert sha256_digest(body) == layer and len(body) == size
        # distribution 2.8 answers 404 for an OCI manifest unless Accept allows OCI.
        accept = {**auth, "Accept": MANIFEST_ACCEPT}
        async with session.get(f"{front.url}/v2/private/app/manifests/v1", headers=accept) as resp:
            assert resp.status == 200 and await resp.read() == image.manifest_bytes
    assert front.redirects == 1
    assert all("authorization" not in r["headers"] and "cookie" not in r["headers"] for r in front.blobstore_requests)

    # A real client through the front: skopeo follows the 307.
    flags = ["--src-tls-verify=false", f"--src-creds={_pull_creds(token_upstream)}"]
    skopeo_ok("copy", *flags, f"docker://{front.host}/private/app:v1", f"dir:{tmp_path / 'out'}")
    assert front.redirects == 1 + len(image.blob_digests)
    assert len(front.blobstore_requests) == 1 + len(image.blob_digests)
    assert all("authorization" not in r["headers"] for r in front.blobstore_requests)


async def test_faulty_upstream_modes(make_faulty_upstream: Callable[..., FaultyUpstream]) -> None:
    for mode in FaultyUpstream.MODES:
        fake = make_faulty_upstream(mode, layer_size=64 * 1024, piece=8192, delay=0.02)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{fake.url}/v2/") as resp:
                assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
            async with session.get(f"{fake.url}/v2/fault/app/manifests/1") as resp:
                assert sha256_digest(await resp.read()) == fake.manifest_digest
            async with session.get(f"{fake.url}/v2/fault/app/blobs/{fake.config_digest}") as resp:
                assert sha256_digest(await resp.read()) == fake.config_digest
            async with session.head(f"{fake.url}/v2/fault/app/blobs/{fake.layer_digest}") as resp:
                assert resp.content_length == fake.layer_size
            started = time.monotonic()
            url = f"{fake.url}/v2/fault/app/blobs/{fake.layer_digest}"
            if mode == "truncate":
                with pytest.raises(aiohttp.ClientPayloadError):
                    async with session.get(url) as resp:
                        await resp.read()
            else:
                async with session.get(url) as resp:
                    body = await resp.read()
                assert len(body) == fake.layer_size
                assert (sha256_digest(body) == fake.layer_digest) is (mode != "wrong")
            if mode == "slow":
                assert time.monotonic() - started >= 0.1
        assert fake.blob_gets == {fake.config_digest: 1, fake.layer_digest: 1}


@pytest.mark.skipif(not (REPO_ROOT / "proxy" / "__main__.py").exists(), reason="proxy package not written yet")
def test_proxy_process_lifecycle(make_proxy: ProxyFactory, plain_upstream: Upstream) -> None:
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]})
    assert proxy.rss_kb() > 0 and proxy.hwm_kb() >= proxy.rss_kb()
    pid = proxy.pid
    proxy.restart()
    assert proxy.pid != pid
    wait_http(f"{proxy.url}/healthz", ok=(200,))
    proxy.kill()
    assert not proxy.running
