"""Blob streaming through the proxy: throughput, memory and upstream fetches.

    python bench/blob_stream.py [--size-mib 200] [--clients 20]

Starts a real distribution registry and the real proxy on 127.0.0.1, pushes
one random uncompressed layer, then prints: cold and warm throughput for one
client, the proxy's peak RSS growth, and the upstream GETs caused by
--clients concurrent cold requests for a second blob.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.http import concurrent_gets  # noqa: E402
from tests.e2e.images import build_image, push  # noqa: E402
from tests.e2e.proxyproc import start_proxy  # noqa: E402
from tests.e2e.upstream import start_registry  # noqa: E402


def timed_get(url: str, clients: int = 1) -> tuple[float, list[str | None]]:
    start = time.perf_counter()
    results = concurrent_gets(url, clients)
    return time.perf_counter() - start, [r.digest for r in results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        upstream = start_registry(base / "upstream")
        proxy = None
        try:
            layout = base / "layout"
            layout.mkdir()
            big = build_image(layout, "big", layer_sizes=[args.size_mib << 20], uncompressed=True)
            push(upstream, layout, "big", "bench/big")
            shared = build_image(layout, "shared", layer_sizes=[args.size_mib << 18], uncompressed=True)
            push(upstream, layout, "shared", "bench/shared")
            proxy = start_proxy(base / "proxy", {"registries": [{"address": "bench.example", "endpoint": upstream.url}]})
            digest, size = big.layers[0]
            url = f"{proxy.url}/v2/bench.example/bench/big/blobs/{digest}"
            rss_before = proxy.hwm_kb()
            cold, cold_digests = timed_get(url)
            warm, warm_digests = timed_get(url)
            assert cold_digests == warm_digests == [digest], "bodies did not verify"
            growth = (proxy.hwm_kb() - rss_before) / 1024
            mib = size / (1 << 20)
            print(f"blob size                     {mib:8.1f} MiB")
            print(f"cold GET (upstream -> client) {mib / cold:8.1f} MiB/s  ({cold:.2f} s)")
            print(f"warm GET (cache -> client)    {mib / warm:8.1f} MiB/s  ({warm:.2f} s)")
            print(f"peak RSS growth               {growth:8.1f} MiB  (from {rss_before / 1024:.1f} MiB)")

            digest, size = shared.layers[0]
            url = f"{proxy.url}/v2/bench.example/bench/shared/blobs/{digest}"
            took, digests = timed_get(url, args.clients)
            assert digests == [digest] * args.clients, "bodies did not verify"
            fetches = upstream.wait_requests("GET", f"/blobs/{digest}")
            print(f"{args.clients} concurrent cold GETs of {size / (1 << 20):.1f} MiB: "
                  f"{fetches} upstream GET(s), {took:.2f} s, {args.clients * size / (1 << 20) / took:.1f} MiB/s served")
        finally:
            if proxy is not None:
                proxy.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
