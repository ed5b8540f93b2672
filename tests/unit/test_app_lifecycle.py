"""Shutdown stops every task the proxy started: downloads, single-flight work, renewals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from proxy.app import create_app
from proxy.config.settings import RegistryConfig, Settings

from .engine_fakes import WAIT
from .test_engine_http import BLOB, BLOB_PATH, PIECE, REGISTRY, ServerFactory, SlowRegistry, serving

PROXY_SOURCES = str(Path(__file__).resolve().parents[2] / "proxy")


def proxy_tasks() -> list[asyncio.Task[object]]:
    """Tasks running a coroutine of the proxy's own code (not aiohttp's or the test's)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_filename.startswith(PROXY_SOURCES):
            found.append(task)
    return found


async def test_shutdown_cancels_and_awaits_a_download_in_flight(tmp_path: Path, aiohttp_server: ServerFactory) -> None:
    upstream = SlowRegistry()
    upstream_server = await aiohttp_server(upstream.app())
    endpoint = str(upstream_server.make_url("")).rstrip("/")
    settings = Settings(data_dir=tmp_path / "data", secret_key_file=tmp_path / "secret.key",
                        registries={REGISTRY: RegistryConfig(address=REGISTRY, endpoint=endpoint)})
    # A short grace for handlers still running, so the app's own cleanup is what stops the download.
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=0.2)
    async with serving(runner) as proxy, aiohttp.ClientSession() as client:
        upstream.feed(BLOB[:2 * PIECE])
        response = await client.get(proxy.with_path(BLOB_PATH, encoded=True))
        assert await asyncio.wait_for(response.content.readexactly(PIECE), WAIT) == BLOB[:PIECE]
        response.close()
        # The download goes on without its client, and the renewal loop runs.
        assert proxy_tasks(), "no task of the proxy's was running"
    # serving() has run the app's cleanup: nothing of the proxy's may still run.
    assert [task for task in proxy_tasks() if not task.done()] == []
    assert list((tmp_path / "data" / "cache" / "tmp").iterdir()) == []
