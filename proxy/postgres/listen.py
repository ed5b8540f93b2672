"""LISTEN on PostgreSQL channels for as long as the process runs, reconnecting when the server goes away.

A notification sent while the listener was disconnected is lost for good,
so after each (re)connect every channel is reported once with an empty
payload: whoever listens reloads what it keeps rather than trust it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from proxy.postgres.pool import connect_kwargs, redact

__all__ = ["Listener"]

log = logging.getLogger(__name__)

_FIRST_DELAY, _MAX_DELAY = 0.2, 5.0


class Listener:
    def __init__(self, url: str, channels: Sequence[str], on_notify: Callable[[str, str], None]) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self.ready = asyncio.Event()  # set once listening, the first time

    async def run(self) -> None:
        """Listen until cancelled; ``on_notify(channel, payload)`` runs on the event loop."""
        import psycopg
        from psycopg import sql

        delay = _FIRST_DELAY
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True,
                                                                 **connect_kwargs(self._url)) as conn:
                    for channel in self._channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if self.ready.is_set():
                        log.info("listening to PostgreSQL %s again", redact(self._url))
                    self.ready.set()
                    delay = _FIRST_DELAY
                    for channel in self._channels:
                        self._on_notify(channel, "")
                    async for note in conn.notifies():
                        self._on_notify(note.channel, note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("listening to PostgreSQL %s failed (%s); again in %.1f s", redact(self._url),
                            str(exc).strip().replace("\n", " ") or type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
