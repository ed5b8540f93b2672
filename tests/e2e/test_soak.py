"""A soak: many clients pulling a mix of images at once, every body verified.

Long (a minute by default), so it runs only with REGISTRY_PROXY_LONG_TESTS=1;
REGISTRY_PROXY_SOAK_SECONDS and REGISTRY_PROXY_SOAK_CLIENTS change its size.
It prints what it measured: pulls, bytes, upstream GETs and the proxy's peak RSS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest

from .images import ImageInfo, build_image, push
from .proxyproc import ProxyFactory
from .upstream import MANIFEST_ACCEPT, Upstream

LONG = os.environ.get("REGISTRY_PROXY_LONG_TESTS") == "1"
SECONDS = float(os.environ.get("REGISTRY_PROXY_SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("REGISTRY_PROXY_SOAK_CLIENTS", "200"))


async def _pull(session: aiohttp.ClientSession, base: str, name: str, image: ImageInfo) -> int:
    """One whole pull: the manifest by tag, then every blob, each checked against its digest; bytes read."""
    async with session.get(f"{base}/v2/soak.example/{name}/manifests/1", headers={"Accept": MANIFEST_ACCEPT}) as resp:
        body = await resp.read()
        assert resp.status == 200, (name, resp.status, body[:200])
    assert body == image.manifest_bytes
    total = len(body)
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        async with session.get(f"{base}/v2/soak.example/{name}/blobs/{blob['digest']}") as resp:
            assert resp.status == 200, (name, blob["digest"], resp.status)
            hasher = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(256 * 1024):
                hasher.update(chunk)
                total += len(chunk)
        assert "sha256:" + hasher.hexdigest() == blob["digest"]
    return total


@pytest.mark.skipif(not LONG, reason="long test (about a minute): set REGISTRY_PROXY_LONG_TESTS=1 to run it")
def test_many_clients_pulling_a_mix_of_images_get_every_byte_right(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory) -> None:
    images: dict[str, ImageInfo] = {}
    for i, sizes in enumerate(([20_000], [300_000, 50_000], [2_000_000], [8_000_000, 1_000_000], [100] * 8)):
        name = f"org/app{i}"
        images[name] = build_image(oci_layout, "1", layer_sizes=sizes, uncompressed=True)
        push(plain_upstream, oci_layout, "1", name)
    proxy = make_proxy({"registries": [{"address": "soak.example", "endpoint": plain_upstream.url}]})
    rss_before = proxy.hwm_kb()

    async def client(session: aiohttp.ClientSession, deadline: float, rng: random.Random) -> tuple[int, int]:
        pulls = moved = 0
        while time.monotonic() < deadline:
            name = rng.choice(list(images))
            moved += await _pull(session, proxy.url, name, images[name])
            pulls += 1
        return pulls, moved

    async def run() -> list[tuple[int, int]]:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            deadline = time.monotonic() + SECONDS
            return await asyncio.gather(*(client(session, deadline, random.Random(i)) for i in range(CLIENTS)))

    started = time.monotonic()
    results = asyncio.run(run())
    took = time.monotonic() - started
    pulls, moved = sum(r[0] for r in results), sum(r[1] for r in results)
    blob_gets = sum(plain_upstream.count_requests("GET", f"/blobs/{d}") for image in images.values()
                    for d in image.blob_digests)
    blobs = sum(len(image.blob_digests) for image in images.values())
    print(f"\nsoak: {CLIENTS} clients, {took:.0f} s: {pulls} pulls, {moved / 2**20:.0f} MiB verified, "
          f"{blob_gets} upstream blob GETs for {blobs} blobs, peak RSS {proxy.hwm_kb() / 1024:.0f} MiB "
          f"(from {rss_before / 1024:.0f} MiB)")
    assert pulls >= CLIENTS
    # Every blob came from upstream once, however many clients wanted it at once.
    assert blob_gets == blobs
