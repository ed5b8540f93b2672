"""Warm manifest requests by tag: anonymous, with a pull key's token, and with the key as Basic.

    python bench/manifest_auth.py [--seconds 5] [--rounds 3]

Starts a real distribution registry and the real proxy on 127.0.0.1, pulls
one manifest once so it is cached, then measures requests per second at 16
and 64 concurrent clients for each way of authenticating, rounds alternating
between them. Prints each rate and its ratio to anonymous: a key must not
cost a slow hash per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.http import call, get  # noqa: E402
from tests.e2e.images import build_image, push  # noqa: E402
from tests.e2e.proxyproc import start_proxy  # noqa: E402
from tests.e2e.upstream import start_registry  # noqa: E402

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
TOKEN = "bench-admin-token-0123456789abcdef"


async def rate(url: str, headers: dict[str, str], clients: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"{resp.status} for {headers or 'anonymous'}")
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        upstream = start_registry(base / "upstream")
        proxy = None
        try:
            layout = base / "layout"
            layout.mkdir()
            build_image(layout, "1", layer_sizes=[1000])
            push(upstream, layout, "1", "bench/app")
            proxy = start_proxy(base / "proxy", {"registries": [{"address": "bench.example",
                                                                   "endpoint": upstream.url}]},
                                env={"REGISTRY_PROXY_ADMIN_TOKEN": TOKEN})
            key = call(proxy.host, "POST", "/api/v1/environments/default/keys",
                       {"Authorization": f"Bearer {TOKEN}"}).json()
            basic = "Basic " + base64.b64encode(f"{key['id']}:{key['secret']}".encode()).decode()
            token = json.loads(get(proxy.host, "/auth/token", Authorization=basic).body)["token"]
            url = f"{proxy.url}/v2/bench.example/bench/app/manifests/1"
            modes = {"anonymous": {"Accept": ACCEPT}, "bearer token": {"Accept": ACCEPT, "Authorization": f"Bearer {token}"},
                     "basic key": {"Accept": ACCEPT, "Authorization": basic}}
            for headers in modes.values():
                asyncio.run(rate(url, headers, 4, 0.5))  # cached, and the key's one slow check done
            for clients in (16, 64):
                results: dict[str, list[float]] = {mode: [] for mode in modes}
                for _ in range(args.rounds):
                    for mode, headers in modes.items():
                        results[mode].append(asyncio.run(rate(url, headers, clients, args.seconds)))
                anonymous = statistics.median(results["anonymous"])
                for mode, rates in results.items():
                    median = statistics.median(rates)
                    print(f"c={clients:<3} {mode:13} {median:8.0f} req/s  ({median / anonymous:.2f}x anonymous; "
                          f"rounds: {', '.join(f'{r:.0f}' for r in rates)})")
        finally:
            if proxy is not None:
                proxy.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
