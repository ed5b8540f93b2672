"""Session-level advisory locks on one dedicated connection: held until unlocked or until this process dies.

PostgreSQL drops a session's advisory locks when the session ends, so a
replica that dies (or loses its connection) lets another take over; the
session's server-side keepalives make "ends" true within seconds for a node
that vanished without closing its socket. Unlike PostgreSQL's, these locks are
not reentrant within the process: a key this process holds is refused to its
second taker, as it would be on another replica.

A lock that cannot be asked for raises PgUnavailable, never reads as "held".
After a failed connect, the next second's callers are refused at once rather
than each waiting out a connect of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from proxy.postgres.pool import PgUnavailable, connect_kwargs, failure, redact

if TYPE_CHECKING:
    import psycopg

__all__ = ["SessionLocks", "lock_key"]

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 3
# How long after a failed connect callers are refused without trying again.
_RETRY_AFTER = 1.0


def lock_key(name: str) -> int:
    """The advisory lock key for ``name``: a signed 64-bit integer from its SHA-256."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SessionLocks:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held: set[int] = set()
        self._mutex = asyncio.Lock()
        self._failed: tuple[float, str] | None = None  # when the last connect failed, and why

    async def open(self) -> None:
        """Connect; PgUnavailable if the server cannot be reached."""
        import psycopg

        try:
            await self._connect()
        except psycopg.Error as exc:
            raise failure(self._url, exc) from None

    async def close(self) -> None:
        async with self._mutex:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is not None:
                await conn.close()

    async def try_lock(self, key: int) -> bool:
        """Take ``key`` if nobody holds it, in this process or another: False if someone does; PgUnavailable if the
        server cannot be asked."""
        import psycopg

        self._refuse_while_failing()
        async with self._mutex:
            if key in self._held:
                return False
            conn = self._conn if self._conn is not None and not self._conn.closed else await self._reconnect()
            try:
                cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                row = await cursor.fetchone()
            except (psycopg.Error, OSError) as exc:
                self._lost(exc)
                raise failure(self._url, exc) from None
            if row is None or not row[0]:
                return False
            self._held.add(key)
            return True

    async def unlock(self, key: int) -> None:
        """Release ``key``; nothing to do if the connection (and with it the lock) is gone."""
        import psycopg

        async with self._mutex:
            if key not in self._held:
                return
            self._held.discard(key)
            if self._conn is None or self._conn.closed:
                return
            try:
                await self._conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except (psycopg.Error, OSError) as exc:
                self._lost(exc)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        # A new session holds none of the old one's locks.
        self._held.clear()
        self._conn = await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, **{**connect_kwargs(self._url), "connect_timeout": _CONNECT_TIMEOUT})
        return self._conn

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        # Callers that queued behind a connect that failed do not each try again.
        self._refuse_while_failing()
        try:
            conn = await self._connect()
        except (psycopg.Error, OSError) as exc:
            error = failure(self._url, exc)
            self._failed = (asyncio.get_running_loop().time(), str(error))
            raise error from None
        self._failed = None
        return conn

    def _refuse_while_failing(self) -> None:
        if self._failed is not None and asyncio.get_running_loop().time() - self._failed[0] < _RETRY_AFTER:
            raise PgUnavailable(self._failed[1])

    def _lost(self, exc: BaseException) -> None:
        log.warning("advisory locks on PostgreSQL %s: %s", redact(self._url),
                    str(exc).strip().replace("\n", " ") or type(exc).__name__)
        if self._conn is not None and self._conn.closed:
            self._conn = None
            self._held.clear()
