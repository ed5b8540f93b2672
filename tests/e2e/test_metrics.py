"""What an operator's monitoring sees: /metrics, /healthz, /readyz and the access log.

Every check scrapes the real proxy process over HTTP and parses the exposition
with prometheus_client's own parser, the way Prometheus would read it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .admin import new_token
from .cloud import AWS_ISOLATION, ECR, FakeEcr
from .http import Reply, call, get
from .images import ImageInfo, build_image, push
from .proxyproc import ProxyFactory, ProxyProcess
from .scrape import Key, Scrape, scrape
from .tokenserver import TokenServer
from .tools import wait_until
from .upstream import MANIFEST_ACCEPT, Upstream

BROKEN_ECR = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_urlsafe(12)

def mapped(address: str, upstream: Upstream, **config: Any) -> dict[str, Any]:
    return {"registries": [{"address": address, "endpoint": upstream.url, "token_realms": upstream.token_realms}], **config}


def pull(proxy: ProxyProcess, repo: str, tag: str, image: ImageInfo, **headers: str) -> list[Reply]:
    """GET the manifest by tag, then every blob, as a client pulling one image does."""
    manifest = get(proxy.host, f"/v2/{repo}/manifests/{tag}", Accept=MANIFEST_ACCEPT, **headers)
    assert manifest.status == 200 and manifest.body == image.manifest_bytes, (manifest.status, manifest.body[:300])
    replies = [manifest]
    for digest in image.blob_digests:
        blob = get(proxy.host, f"/v2/{repo}/blobs/{digest}", **headers)
        assert blob.status == 200 and blob.headers["docker-content-digest"] == digest, blob.status
        replies.append(blob)
    return replies


def image_bytes(image: ImageInfo) -> tuple[int, int]:
    """(bytes of all blobs, bytes of the manifest) that one pull of `image` transfers."""
    return len(image.config_bytes) + sum(size for _, size in image.layers), len(image.manifest_bytes)


# -- the counters a pull moves -------------------------------------------------------------------------------


def test_a_cold_then_a_warm_pull_move_the_counters_by_what_was_served(plain_upstream: Upstream, oci_layout: Path,
                                                                       make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[40_000, 3_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy(mapped("quay.io", plain_upstream))
    blobs, manifest = image_bytes(image)
    duration = "registry_proxy_upstream_request_duration_seconds"

    before = scrape(proxy)
    assert before.types["registry_proxy_requests"] == "counter"
    assert before.types[duration] == "histogram"
    assert before.types["registry_proxy_cache_size_bytes"] == "gauge"
    assert before("registry_proxy_cache_size_bytes") == 0
    assert before("registry_proxy_cache_objects", kind="blob") == 0

    cold_replies = pull(proxy, "quay.io/org/app", "1", image)
    assert [r.headers["x-registry-proxy-cache"] for r in cold_replies] == ["miss"] * 4
    cold = scrape(proxy)
    assert cold("registry_proxy_requests_total", registry="quay.io", endpoint="manifest", status_class="2xx") == 1
    assert cold("registry_proxy_requests_total", registry="quay.io", endpoint="blob", status_class="2xx") == 3
    assert cold("registry_proxy_cache_misses_total", kind="manifest") == 1
    assert cold("registry_proxy_cache_misses_total", kind="blob") == 3
    assert cold("registry_proxy_cache_hits_total", kind="blob") == 0
    assert cold("registry_proxy_served_bytes_total", source="upstream") == blobs + manifest
    assert cold("registry_proxy_served_bytes_total", source="cache") == 0
    # One upstream answer per object fetched, each a few milliseconds on loopback.
    assert cold(f"{duration}_count", registry="quay.io") - before(f"{duration}_count", registry="quay.io") == 4
    assert 0 < cold(f"{duration}_sum", registry="quay.io") < 4 * 2.5
    assert cold(f"{duration}_bucket", registry="quay.io", le="+Inf") == 4
    assert cold("registry_proxy_cache_size_bytes") == blobs + manifest
    assert cold("registry_proxy_cache_objects", kind="blob") == 3
    assert cold("registry_proxy_cache_objects", kind="manifest") == 1
    assert cold("registry_proxy_inflight_requests") == 0

    warm_replies = pull(proxy, "quay.io/org/app", "1", image)
    assert [r.headers["x-registry-proxy-cache"] for r in warm_replies] == ["hit"] * 4
    warm = scrape(proxy)
    assert warm("registry_proxy_requests_total", registry="quay.io", endpoint="blob", status_class="2xx") == 6
    assert warm("registry_proxy_cache_hits_total", kind="manifest") == 1
    assert warm("registry_proxy_cache_hits_total", kind="blob") == 3
    assert warm("registry_proxy_cache_misses_total", kind="blob") == 3
    # The warm pull came from disk: cache-sourced bytes are exactly the image, upstream ones did not move.
    assert warm("registry_proxy_served_bytes_total", source="cache") == blobs + manifest
    assert warm("registry_proxy_served_bytes_total", source="upstream") == blobs + manifest
    assert warm(f"{duration}_count", registry="quay.io") == cold(f"{duration}_count", registry="quay.io")
    assert warm("registry_proxy_cache_size_bytes") == blobs + manifest
    assert warm("registry_proxy_cache_evictions_total") == 0

    unknown = get(proxy.host, "/v2/quay.io/org/app/manifests/nope", Accept=MANIFEST_ACCEPT)
    assert unknown.status == 404
    assert scrape(proxy)("registry_proxy_requests_total", registry="quay.io", endpoint="manifest",
                         status_class="4xx") == 1


def test_whitelist_denials_and_stale_serves_are_counted(plain_upstream: Upstream, oci_layout: Path,
                                                        make_proxy: ProxyFactory) -> None:
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    token = new_token()
    # A tag_ttl of 0 s: the tag is due for revalidation at once, so nothing waits out a TTL.
    proxy = make_proxy(mapped("quay.io", plain_upstream, settings={"registry.whitelist": "quay.io"},
                              cache={"tag_ttl": "0s", "max_stale": "1h"}),
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    pull(proxy, "quay.io/org/app", "1", image)

    # Neither ghcr.io nor gcr.io was named by the operator: both are "other". The
    # default registry (an unprefixed name) keeps its name.
    for path in ("/v2/ghcr.io/org/app/manifests/1", f"/v2/gcr.io/org/app/blobs/{image.config_digest}",
                 "/v2/library/alpine/manifests/latest"):
        denied = get(proxy.host, path, Accept=MANIFEST_ACCEPT)
        assert denied.status == 403 and denied.error_codes == ["DENIED"], (path, denied.body)
    after_denials = scrape(proxy)
    assert after_denials("registry_proxy_whitelist_denials_total", registry="other") == 2
    assert after_denials("registry_proxy_whitelist_denials_total", registry="docker.io") == 1
    assert after_denials("registry_proxy_requests_total", registry="other", endpoint="manifest",
                         status_class="4xx") == 1
    assert after_denials("registry_proxy_requests_total", registry="other", endpoint="blob", status_class="4xx") == 1
    assert after_denials("registry_proxy_stale_serves_total", registry="quay.io") == 0

    plain_upstream.stop()  # the tag must be revalidated, and the upstream is gone
    stale = get(proxy.host, "/v2/quay.io/org/app/manifests/1", Accept=MANIFEST_ACCEPT)
    assert stale.status == 200 and stale.headers["x-registry-proxy-cache"] == "stale"
    after_stale = scrape(proxy)
    assert after_stale("registry_proxy_stale_serves_total", registry="quay.io") == 1
    assert after_stale("registry_proxy_cache_hits_total", kind="manifest") == 1
    status = get(proxy.host, "/status.json", Authorization=f"Bearer {token}").json()
    assert status["cache"]["stale_serves"] == 1
    [quay] = [r for r in status["environments"][0]["registries"] if r["address"] == "quay.io"]
    assert quay["errors"] and "unreachable" in quay["errors"][0]["message"], quay["errors"]


def test_minted_credentials_are_counted_with_their_expiry(token_server: TokenServer, token_upstream: Upstream,
                                                          oci_layout: Path, make_proxy: ProxyFactory) -> None:
    build_image(oci_layout, "1")
    push(token_upstream, oci_layout, "1", "private/app")
    good = FakeEcr(lambda password, _expires: token_server.set_login("AWS", password), lifetime=3600)
    broken = FakeEcr(lambda _password, _expires: None)
    broken.fail = True
    try:
        def ecr(address: str, fake: FakeEcr) -> dict[str, Any]:
            return {"address": address, "endpoint": token_upstream.url, "token_realms": token_upstream.token_realms,
                    "kind": "ecr",
                    "access_key_id": fake.access_key_id, "secret_access_key": SECRET_KEY,
                    "aws_endpoint_url": fake.url}

        proxy = make_proxy({"registries": [ecr(ECR, good), ecr(BROKEN_ECR, broken)]}, env=AWS_ISOLATION)
        asked = time.time()
        assert get(proxy.host, f"/v2/{ECR}/private/app/manifests/1", Accept=MANIFEST_ACCEPT).status == 200
        refused = get(proxy.host, f"/v2/{BROKEN_ECR}/private/app/manifests/1", Accept=MANIFEST_ACCEPT)
        assert refused.status == 401, refused.body
        metrics = scrape(proxy)
        assert good.mints == 1
        assert metrics("registry_proxy_credential_mints_total", registry=ECR, result="ok") == 1
        assert metrics("registry_proxy_credential_mints_total", registry=ECR, result="failed") == 0
        assert metrics("registry_proxy_credential_mints_total", registry=BROKEN_ECR, result="ok") == 0
        assert metrics("registry_proxy_credential_mints_total", registry=BROKEN_ECR, result="failed") >= 1
        expiry = metrics("registry_proxy_credential_expiry_timestamp_seconds", registry=ECR)
        assert asked + 3600 - 5 < expiry < time.time() + 3600 + 5
        # Nothing minted, nothing to expire.
        assert not metrics.has("registry_proxy_credential_expiry_timestamp_seconds", registry=BROKEN_ECR)
    finally:
        good.stop()
        broken.stop()


def test_private_metrics_need_the_admin_token_as_bearer(make_proxy: ProxyFactory) -> None:
    token = new_token()
    proxy = make_proxy({"metrics": {"public": False}}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    anonymous = get(proxy.host, "/metrics")
    assert anonymous.status == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer ")
    assert b"registry_proxy" not in anonymous.body
    assert get(proxy.host, "/metrics", Authorization=f"Bearer {new_token()}").status == 401
    assert get(proxy.host, "/metrics", Authorization=token).status == 401
    assert scrape(proxy, token).has("registry_proxy_cache_size_bytes")
    # Probes stay open: Kubernetes has no token.
    assert get(proxy.host, "/healthz").status == 200
    assert get(proxy.host, "/readyz").status == 200


# -- bounded label sets ----------------------------------------------------------------------------------------


def random_paths(count: int, registry: str | None) -> list[str]:
    """Manifest, blob and tag-list paths for `count` fresh repository names.

    registry None: a different unconfigured registry each time, written as an
    IP literal in 127.0.0.0/8, which the SSRF guard refuses before any
    connection or DNS lookup.
    """
    paths = []
    for i in range(count):
        prefix = registry or f"127.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        name = f"{prefix}/n{secrets.token_hex(6)}/r{secrets.token_hex(4)}"
        paths.append([f"/v2/{name}/manifests/latest", f"/v2/{name}/blobs/sha256:{secrets.token_hex(32)}",
                      f"/v2/{name}/tags/list"][i % 3])
    return paths


async def gather_statuses(base: str, paths: list[str]) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        async def one(path: str) -> int:
            async with session.get(base + path) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one(path) for path in paths))


def series_of(metrics: Scrape) -> set[Key]:
    return set(metrics.values)


def test_series_stay_bounded_under_thousands_of_repository_names(plain_upstream: Upstream,
                                                                 make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(mapped("quay.io", plain_upstream))
    # A few requests of every shape first, so every label combination exists.
    warmup = random_paths(3, "quay.io") + random_paths(3, None)
    assert asyncio.run(gather_statuses(proxy.url, warmup)) == [404] * 3 + [403] * 3
    first = scrape(proxy)

    flood = random_paths(500, "quay.io") + random_paths(4500, None)
    started = time.monotonic()
    statuses = asyncio.run(gather_statuses(proxy.url, flood))
    elapsed = time.monotonic() - started
    assert statuses == [404] * 500 + [403] * 4500
    after = scrape(proxy)

    assert series_of(after) == series_of(first), series_of(after) ^ series_of(first)
    assert len(series_of(after)) < 80
    assert after.label_values("registry") <= {"quay.io", "docker.io", "other", "none"}
    assert after("registry_proxy_requests_total", registry="other", endpoint="manifest", status_class="4xx") > 1000
    names = {part for path in warmup + flood for part in path.split("/")[3:5]}
    leaked = [name for name in names if name in after.text]
    assert not leaked, leaked[:5]
    print(f"\n{len(flood)} requests for random repositories in {elapsed:.1f}s; {len(series_of(after))} series")


# -- no secrets -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [
    "info",
    "debug",
])
def test_no_secret_reaches_the_pages_the_metrics_or_the_log(htpasswd_upstream: Upstream, token_upstream: Upstream,
                                                            token_server: TokenServer, oci_layout: Path,
                                                            make_proxy: ProxyFactory, level: str) -> None:
    build_image(oci_layout, "1")
    push(htpasswd_upstream, oci_layout, "1", "org/app")
    push(token_upstream, oci_layout, "1", "private/app")
    minted: list[str] = []

    def on_mint(password: str, _expires: float) -> None:
        minted.append(password)
        token_server.set_login("AWS", password)

    fake = FakeEcr(on_mint)
    try:
        [(alice, alice_pw)] = htpasswd_upstream.users.items()
        [(bob, bob_pw)] = token_server.users.items()
        admin_token = new_token()
        proxy = make_proxy({
            "log": {"level": level},
            "registries": [
                {"address": "private.example.com", "endpoint": htpasswd_upstream.url, "username": alice,
                 "password": alice_pw},
                {"address": "token.example.com", "endpoint": token_upstream.url,
                 "token_realms": token_upstream.token_realms, "username": bob, "password": bob_pw},
                {"address": ECR, "endpoint": token_upstream.url, "token_realms": token_upstream.token_realms,
                 "kind": "ecr", "access_key_id": fake.access_key_id,
                 "secret_access_key": SECRET_KEY, "aws_endpoint_url": fake.url},
            ]}, env={"REGISTRY_PROXY_ADMIN_TOKEN": admin_token, **AWS_ISOLATION})
        key = call(proxy.host, "POST", "/api/v1/environments/default/keys",
                   {"Authorization": f"Bearer {admin_token}"}).json()
        client_basic = base64.b64encode(f"{key['id']}:{key['secret']}".encode()).decode()
        realm = get(proxy.host, "/auth/token?service=registry-proxy", Authorization=f"Basic {client_basic}")
        client_bearer = realm.json()["token"]
        for repo, auth in (("private.example.com/org/app", f"Bearer {client_bearer}"),
                           ("token.example.com/private/app", f"Basic {client_basic}"),
                           (f"{ECR}/private/app", f"Bearer {client_bearer}")):
            reply = get(proxy.host, f"/v2/{repo}/manifests/1", Accept=MANIFEST_ACCEPT, Authorization=auth)
            assert reply.status == 200, (repo, reply.body)
        assert minted, "the ECR credential was never minted"

        basic = base64.b64encode(f"admin:{admin_token}".encode()).decode()
        page = get(proxy.host, "/", Authorization=f"Basic {basic}")
        status = get(proxy.host, "/status.json", Authorization=f"Bearer {admin_token}")
        assert page.status == 200 and status.status == 200
        # The access log line follows the response; the last secret-bearing request's line comes last.
        wait_until(lambda: '"GET /status.json"' in proxy.log_text(), what="the access log line of /status.json")
        seen = {"/": page.body.decode(), "/status.json": status.body.decode(), "/metrics": scrape(proxy).text,
                "log": proxy.log_text()}
        secrets_used = {
            "htpasswd password": alice_pw, "token-auth password": bob_pw, "AWS secret access key": SECRET_KEY,
            "client bearer token": client_bearer, "client basic credentials": client_basic,
            "pull key secret": key["secret"],
            "admin token": admin_token, "admin basic credentials": basic,
            "htpasswd basic credentials": base64.b64encode(f"{alice}:{alice_pw}".encode()).decode(),
            "token-auth basic credentials": base64.b64encode(f"{bob}:{bob_pw}".encode()).decode(),
            **{f"minted ECR password {i}": password for i, password in enumerate(minted)},
            **{f"ECR authorization token {i}": base64.b64encode(f"AWS:{password}".encode()).decode()
               for i, password in enumerate(minted)},
        }
        found = [(what, where) for what, secret in secrets_used.items() for where, text in seen.items()
                 if secret in text]
        assert not found, found
        # The same pages do name who pulls, so the check above looked at filled-in pages.
        assert alice in seen["/"] and bob in seen["/status.json"] and key["id"] in seen["/"]
        assert "private.example.com" in seen["/metrics"] and f"{ECR}/private/app/manifests/1" in seen["log"]
    finally:
        fake.stop()


# -- access log -------------------------------------------------------------------------------------------------

TEXT_LINE = re.compile(r'(?P<remote>\S+) "(?P<method>[A-Z]+) (?P<path>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
                       r"(?P<duration_ms>\d+(?:\.\d+)?)ms registry=(?P<registry>\S+) env=(?P<environment>\S+) "
                       r"key=(?P<key>\S+) cache=(?P<cache>\S+)$")


def access_entries(proxy: ProxyProcess, log_format: str) -> list[dict[str, Any]]:
    entries = []
    for line in proxy.log_text().splitlines():
        if "aiohttp.access" not in line:
            continue
        if log_format == "json":
            entry = json.loads(line[line.index("{"):])
        else:
            match = TEXT_LINE.search(line)
            assert match is not None, line
            entry = match.groupdict()
        entries.append({**entry, "status": int(entry["status"]), "bytes": int(entry["bytes"]),
                        "duration_ms": float(entry["duration_ms"])})
    return entries


def wait_for_entries(proxy: ProxyProcess, log_format: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(entries := access_entries(proxy, log_format)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return entries


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_log_has_one_line_per_request(plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory,
                                             log_format: str) -> None:
    image = build_image(oci_layout, "1", layer_sizes=[20_000])
    push(plain_upstream, oci_layout, "1", "org/app")
    proxy = make_proxy(mapped("quay.io", plain_upstream, log={"format": log_format}))
    ready = len(wait_for_entries(proxy, log_format, 1))  # the readiness probes of the fixture

    layer = image.layers[0][0]
    requests = [
        ("GET", "/v2/quay.io/org/app/manifests/1", 200, "miss", len(image.manifest_bytes)),
        ("GET", f"/v2/quay.io/org/app/blobs/{layer}", 200, "miss", image.layers[0][1]),
        ("GET", f"/v2/quay.io/org/app/blobs/{layer}", 200, "hit", image.layers[0][1]),
        ("HEAD", "/v2/quay.io/org/app/manifests/1", 200, "hit", 0),
        ("GET", f"/v2/quay.io/org/app/blobs/sha256:{'0' * 64}", 404, "-", None),
        ("GET", "/metrics", 200, "-", None),
    ]
    for method, path, status, _, _ in requests:
        reply = call(proxy.host, method, path, {"Accept": MANIFEST_ACCEPT})
        assert reply.status == status, (path, reply.status, reply.body[:300])

    entries = wait_for_entries(proxy, log_format, ready + len(requests))[ready:]
    assert len(entries) == len(requests), entries
    for entry, (method, path, status, cache, body) in zip(entries, requests, strict=True):
        assert (entry["method"], entry["path"], entry["status"], entry["cache"]) == (method, path, status, cache)
        assert entry["registry"] == ("-" if path == "/metrics" else "quay.io")
        assert entry["environment"] == ("-" if path == "/metrics" else "default") and entry["remote"] == "127.0.0.1"
        assert entry["key"] == "-"
        assert 0 <= entry["duration_ms"] < 5000
        if body is not None:
            # Bytes on the wire for this response: the body plus the status line and headers.
            assert body < entry["bytes"] < body + 1024, (path, body, entry["bytes"])


# A forged access-log line in the path, with a quote to end the quoted path early, and every kind of control
# character: C0 (LF, CR, NUL, ESC), DEL, C1 (NEL) and U+2028.
FORGED = "/v2/quay.io/org/app%0d%0a2026-01-01%2000:00:00,000%20INFO%20aiohttp.access:%20%22GET%20/forged%22" \
         "%00%1b[31m%7f%c2%85%e2%80%a8/manifests/1"
FORGED_PATH = '/v2/quay.io/org/app\r\n2026-01-01 00:00:00,000 INFO aiohttp.access: "GET /forged"' \
              "\x00\x1b[31m\x7f\x85\u2028/manifests/1"
FORGED_TEXT = FORGED_PATH.translate({0x0D: "\\r", 0x0A: "\\n", 0x22: "\\x22", 0x00: "\\x00", 0x1B: "\\x1b",
                                     0x7F: "\\x7f", 0x85: "\\x85", 0x2028: "\\u2028"})
CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_control_characters_in_a_request_cannot_forge_log_lines(make_proxy: ProxyFactory, log_format: str) -> None:
    proxy = make_proxy({"log": {"format": log_format}})
    ready = len(wait_for_entries(proxy, log_format, 1))
    assert call(proxy.host, "GET", FORGED, {"Accept": MANIFEST_ACCEPT}).status in (400, 404)
    # A marker request after it: lines are written in order, so once its line is
    # there, a line forged by the first request would be there too.
    assert get(proxy.host, "/healthz").status == 200
    entries = wait_for_entries(proxy, log_format, ready + 2)[ready:]
    assert [entry["path"] for entry in entries] == [FORGED_TEXT if log_format == "text" else FORGED_PATH, "/healthz"]
    log = proxy.log_path.read_bytes().decode()
    assert CONTROLS.search(log) is None, CONTROLS.search(log)
    assert len(access_entries(proxy, log_format)) == ready + 2
    if log_format == "json":
        assert all(isinstance(json.loads(line), dict) for line in log.splitlines() if line.strip())


def test_json_log_format_writes_json_lines(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"log": {"format": "json"}})
    assert get(proxy.host, "/healthz").status == 200
    wait_until(lambda: "/healthz" in proxy.log_text(), what="the access log line of /healthz")
    lines = [line for line in proxy.log_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


# -- probes ------------------------------------------------------------------------------------------------------


def test_probes_and_metrics_are_open_by_default(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({}, env={"REGISTRY_PROXY_ADMIN_TOKEN": new_token()})
    assert scrape(proxy).has("registry_proxy_inflight_requests")
    health = get(proxy.host, "/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = get(proxy.host, "/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "cache_writable": "ok", "free_space": "ok"}}


def test_readyz_fails_naming_the_check_when_free_space_is_below_min_free(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"cache": {"min_free": "1000TiB"}})
    ready = get(proxy.host, "/readyz")
    assert ready.status == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["store"] == "ok" and body["checks"]["cache_writable"] == "ok"
    assert body["checks"]["free_space"].startswith("failed: ")
    assert "below cache.min_free" in body["checks"]["free_space"]
    # Still alive: a full disk is a reason to take the pod out of rotation, not to restart it.
    assert get(proxy.host, "/healthz").status == 200
