"""The whole server, in process: a client that hangs up halfway through a blob is routine.

The proxy is the runner ``serve`` starts (``create_runner``), with one
configured registry whose endpoint is an in-process fake registry on
127.0.0.1. That registry sends its blob only as fast as the test feeds it, so
the client provably hangs up while the proxy is still downloading. aiohttp's
TestServer is not used for the proxy: it cancels a handler whose client went
away, which the runner ``serve`` starts does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from prometheus_client.parser import text_string_to_metric_families
from proxy.app import create_runner
from proxy.config.settings import RegistryConfig, Settings
from yarl import URL

from .engine_fakes import WAIT, Tally, digest_of

ServerFactory = Callable[..., Awaitable[TestServer]]

REGISTRY = "upstream.test"
REPOSITORY = "team/big"
PIECE = 256 * 1024
BLOB = os.urandom(16 * PIECE)
DIGEST = digest_of(BLOB)
BLOB_PATH = f"/v2/{REGISTRY}/{REPOSITORY}/blobs/{DIGEST}"


class SlowRegistry:
    """Serves one blob, each piece only once the test feeds it; counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self._pieces: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed(self, data: bytes) -> None:
        for start in range(0, len(data), PIECE):
            self._pieces.put_nowait(data[start:start + PIECE])

    def end(self) -> None:
        self._pieces.put_nowait(None)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v2/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[(request.method, request.path)] += 1
        if request.path != f"/v2/{REPOSITORY}/blobs/{DIGEST}":
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]}, status=404)
        headers = {"Docker-Content-Digest": str(DIGEST), "Content-Type": "application/octet-stream"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(BLOB))})
        response = web.StreamResponse(headers=headers)
        response.content_length = len(BLOB)
        await response.prepare(request)
        while (piece := await self._pieces.get()) is not None:
            await response.write(piece)
        await response.write_eof()
        return response


def requests_by_status(metrics_text: str) -> Counter[tuple[str, str]]:
    """registry_proxy_requests_total by (endpoint, status_class)."""
    found: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "registry_proxy_requests_total":
                found[(sample.labels["endpoint"], sample.labels["status_class"])] += int(sample.value)
    return found


@asynccontextmanager
async def serving(runner: web.AppRunner) -> AsyncIterator[URL]:
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield URL(f"http://{host}:{port}")
    finally:
        await runner.cleanup()


async def hang_up_mid_blob(tmp_path: Path, aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture,
                           make_runner: Callable[[Settings], web.AppRunner], *, hung_up_class: str = "2xx") -> None:
    """``hung_up_class``: the status class the request whose client went away is counted under."""
    caplog.set_level(logging.INFO)
    upstream = SlowRegistry()
    upstream_server = await aiohttp_server(upstream.app())
    endpoint = str(upstream_server.make_url("")).rstrip("/")
    settings = Settings(data_dir=tmp_path / "data", secret_key_file=tmp_path / "secret.key",
                        registries={REGISTRY: RegistryConfig(address=REGISTRY, endpoint=endpoint)})
    runner = make_runner(settings)
    answered = Tally()

    @web.middleware
    async def count_answered(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.path.startswith("/v2/"):
                answered.add()

    runner.app.middlewares.append(count_answered)
    async with serving(runner) as proxy, aiohttp.ClientSession() as client:
        blob_url = proxy.with_path(BLOB_PATH, encoded=True)
        upstream.feed(BLOB[:4 * PIECE])
        hung_up = await client.get(blob_url)
        assert hung_up.status == 200 and hung_up.headers["X-Registry-Proxy-Cache"] == "miss"
        # All the proxy has so far (only the blob's own last byte would be held back), so it hangs up on
        # a handler that is waiting for the download to go on.
        sent_so_far = 4 * PIECE
        assert await asyncio.wait_for(hung_up.content.readexactly(sent_so_far), WAIT) == BLOB[:sent_so_far]
        hung_up.close()

        # Another client follows the same download, which goes on without the first.
        follower = await client.get(blob_url)
        upstream.feed(BLOB[4 * PIECE:])
        upstream.end()
        assert await asyncio.wait_for(follower.read(), WAIT) == BLOB
        assert follower.headers["X-Registry-Proxy-Cache"] == "joined"

        later = await client.get(blob_url)
        assert await asyncio.wait_for(later.read(), WAIT) == BLOB
        assert later.headers["X-Registry-Proxy-Cache"] == "hit"
        assert upstream.requests == Counter({("GET", f"/v2/{REPOSITORY}/blobs/{DIGEST}"): 1})

        await answered.reach(3)
        async with client.get(proxy.with_path("/metrics")) as metrics:
            expected = Counter({("blob", "2xx"): 2})
            expected["blob", hung_up_class] += 1
            assert requests_by_status(await metrics.text()) == expected

    trouble = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None]
    assert trouble == [], [r.getMessage() for r in trouble]


async def test_a_client_that_hangs_up_mid_blob_is_routine_and_the_download_still_fills_the_cache(
        tmp_path: Path, aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # The runner `serve` starts, so handlers run as they do in production.
    await hang_up_mid_blob(tmp_path, aiohttp_server, caplog, create_runner)
