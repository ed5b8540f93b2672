"""Run an aiohttp application in a background thread with its own event loop.

The e2e fakes (token server, fault upstreams) must be usable from plain
synchronous tests and from async tests alike, so they cannot live on the
test's event loop: a sync test would never run it, and an async test that
blocks (subprocess.run of skopeo) would starve it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class BackgroundApp:
    """An aiohttp app served on 127.0.0.1 from a daemon thread."""

    def __init__(
        self,
        app: web.Application,
        *,
        port: int = 0,
        bind: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        name: str = "e2e-server",
    ) -> None:
        self._app = app
        self._port = port
        # Any 127.0.0.0/8 address: a second loopback host is a "different site".
        self._bind = bind
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f"{name} did not start")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"{name} failed to start") from self._error

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return f"{self._bind}:{self._port}"

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._setup())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
            self._error = exc
            self._loop.run_until_complete(self._teardown())
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._teardown())
            self._loop.close()

    async def _setup(self) -> None:
        # No access log: aiohttp's would go to the test's logging capture from
        # another thread, and the fakes record what tests need themselves.
        # A short shutdown timeout so a stalled "slow" handler cannot hold up
        # teardown for aiohttp's default 60 s.
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._bind, self._port, ssl_context=self._ssl, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def _teardown(self) -> None:
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except RuntimeError:
                pass  # setup failed before the runner was set up: nothing to clean
        # Anything still pending (a handler stuck mid-stream) is cancelled so
        # the closed loop does not log "Task was destroyed but it is pending".
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_asyncgens()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Close the listener and connections and join the thread; idempotent."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
