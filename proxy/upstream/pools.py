"""The outbound connection pools.

Two pools rather than one: a pooled keep-alive connection is keyed by host and
port, not by the address it reached, so sharing one pool between configured
registries (which may live on private networks) and registries named only in
a request path would let the latter reuse a connection the guard never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from proxy import __version__
from proxy.upstream.guard import PublicOnlyResolver

__all__ = ["DEFAULT_TIMEOUTS", "Pools", "Timeouts", "open_pools"]

USER_AGENT = f"registry-proxy/{__version__}"


@dataclass(frozen=True)
class Timeouts:
    """How long an upstream may take: to connect, to send its response headers, and between two reads of a body."""

    connect: float = 5.0
    response: float = 30.0
    idle: float = 60.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Pools:
    trusted: aiohttp.ClientSession
    public: aiohttp.ClientSession

    def for_registry(self, configured: bool) -> aiohttp.ClientSession:
        return self.trusted if configured else self.public

    async def close(self) -> None:
        await self.trusted.close()
        await self.public.close()


def open_pools(timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Pools:
    def session(resolver: aiohttp.abc.AbstractResolver | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, resolver=resolver),
            # No total: a large blob takes as long as it takes, as long as bytes keep coming.
            timeout=aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_read=timeouts.idle),
            # Cookies never travel: upstreams get only what we choose to send.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            # A blob arrives in reads of up to 1 MiB rather than 64 KiB: a
            # sixteenth of the wake-ups, writes and hops per byte.
            read_bufsize=1024 * 1024,
            # auto_decompress is off (blobs pass through as stored), so ask
            # for no transfer compression: a gzipped token or manifest
            # answer would otherwise be read as its compressed bytes.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    return Pools(trusted=session(PublicOnlyResolver(private_ok=True)), public=session(PublicOnlyResolver()))
