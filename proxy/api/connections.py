"""Client connections: a deadline for request headers, and a bound on how many are open at once.

aiohttp has no header timeout: a client that sends one header line every few
seconds holds its connection, and its file descriptor, for as long as it
likes. Here a request head must be complete within ``header_timeout`` of the
connection opening (of the TLS handshake starting, with TLS) or of the first
byte of a later request on a kept-alive connection; idle kept-alive
connections close after ``keepalive_timeout``. At ``max_connections`` a new
connection closes the one that has waited longest for its request head, so
slow clients cannot lock real ones out; when every connection is serving a
request, the new one is closed instead. What the limit leaves of the
open-file limit stays free for upstream connections and cache files.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionPolice", "PolicedRunner", "default_max_connections"]

log = logging.getLogger(__name__)

# Kept free of client connections: 256 upstream connections (the pools' limit),
# 128 accepted in one burst before any is looked at (the listen backlog), and
# cache files, the database and logs.
_RESERVED_FDS = 512
_REFUSAL_LOG_INTERVAL = 10.0


def default_max_connections() -> int:
    """The open-file limit less what upstreams and the cache need, and at least half of it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(soft - _RESERVED_FDS, soft // 2)


class ConnectionPolice:
    """Which connections are open and which wait for a request head; shared by every listener of the process."""

    def __init__(self, *, header_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self._open: set[_PolicedHandler] = set()
        # Oldest first: the one evicted when the limit is reached.
        self._waiting: dict[_PolicedHandler, None] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._refusals_logged = 0
        self._refusal_logged_at = -_REFUSAL_LOG_INTERVAL

    @property
    def open(self) -> int:
        return len(self._open)

    def opened(self, handler: _PolicedHandler) -> bool:
        """Admit a new connection, evicting the longest-waiting one at the limit; False: close the new one."""
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                self.refused += 1
                self._log_refusals()
                return False
            self.evicted += 1
            next(iter(self._waiting)).evict()
        self._open.add(handler)
        return True

    def closed(self, handler: _PolicedHandler) -> None:
        self._open.discard(handler)
        self._waiting.pop(handler, None)

    def _log_refusals(self) -> None:
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL:
            log.warning("%d connections refused: all %d allowed (server.max_connections) are serving requests",
                        self.refused - self._refusals_logged, self.max_connections)
            self._refusals_logged, self._refusal_logged_at = self.refused, now

    def waiting(self, handler: _PolicedHandler, now_waiting: bool) -> None:
        if now_waiting and handler in self._open:
            self._waiting.pop(handler, None)
            self._waiting[handler] = None
        else:
            self._waiting.pop(handler, None)


class _PolicedHandler(web.RequestHandler):
    """aiohttp's handler with a deadline for each request head.

    Reads two of aiohttp's own fields, as its keep-alive timer does: the count
    of parsed requests (a head is complete when it grows) and the waiter that
    is pending while the connection is idle between requests.
    """

    def __init__(self, manager: web.Server, *, police: ConnectionPolice, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._police = police
        self._head_deadline: asyncio.TimerHandle | None = None
        self._heads_before = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._police.opened(self):
            self.force_close()
            return
        self._await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_waiting()
        self._police.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = self._waiter is not None and not self._waiter.done()
        if data and self._head_deadline is None and idle:
            self._await_head()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self._head_deadline is not None and self._request_count > self._heads_before:
            self._stop_waiting()

    def evict(self) -> None:
        self._stop_waiting()
        self._police.closed(self)
        self.force_close()

    def _await_head(self) -> None:
        self._heads_before = self._request_count
        self._head_deadline = asyncio.get_running_loop().call_later(self._police.header_timeout, self._head_overdue)
        self._police.waiting(self, True)

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._police.waiting(self, False)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        self._police.waiting(self, False)
        if self._request_count == self._heads_before:
            self._police.timed_out += 1
            self.force_close()


class _PolicedSite(web.SockSite):
    def __init__(self, runner: PolicedRunner, sock: socket.socket, *, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context)
        self._policed = runner
        self._listening = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner, as SockSite.start does
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._policed.protocol_factory(), sock=self._listening, ssl=self._ssl_context, backlog=self._backlog,
            # A handshake is part of the head: a client trickling it is cut off as soon.
            ssl_handshake_timeout=self._policed.police.header_timeout if self._ssl_context else None)


class PolicedRunner(web.AppRunner):
    """An AppRunner whose sites police their connections (see the module docstring)."""

    def __init__(self, app: web.Application, *, police: ConnectionPolice, keepalive_timeout: float,
                 **kwargs: Any) -> None:
        # Handler arguments, kept to build each connection's handler as aiohttp's Server would.
        self._handler_args: dict[str, Any] = {"keepalive_timeout": keepalive_timeout, **kwargs}
        super().__init__(app, handle_signals=False, **self._handler_args)
        self.police = police

    def site(self, sock: socket.socket, *, ssl_context: ssl.SSLContext | None = None) -> web.BaseSite:
        return _PolicedSite(self, sock, ssl_context=ssl_context)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        server = self.server
        assert server is not None, "the runner is set up before its sites start"
        loop = asyncio.get_running_loop()
        return lambda: _PolicedHandler(server, police=self.police, loop=loop, **self._handler_args)
