"""Serving the proxy itself over HTTPS, with certificates reloaded from disk.

cert-manager and similar tools replace the files in place. Each reload
builds a fresh SSLContext and, only once it loaded cleanly, makes it the one
new handshakes use (through the SNI callback, which runs for every
handshake). A pair caught halfway through a rotation, new certificate with
the old key, therefore never replaces a working one; established
connections carry on untouched either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from pathlib import Path
from typing import Any

__all__ = ["CertReloader"]

log = logging.getLogger(__name__)


def _context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


class CertReloader:
    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._current = _context(cert_file, key_file)
        # The server's own context: its certificate only matters until the
        # callback hands over the current one.
        self.context = _context(cert_file, key_file)
        self.context.sni_callback = self._select
        self._stamp = self._files_stamp()

    def _select(self, connection: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        connection.context = self._current

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def reload(self, *, force: bool = False) -> bool:
        """Load the pair again if it changed; a broken pair keeps the old one."""
        stamp = self._files_stamp()
        if stamp == self._stamp and not force:
            return False
        try:
            fresh = _context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Often a rotation caught halfway: try again next time.
            log.warning("keeping the current TLS certificate: cannot load %s: %s", self.cert_file, exc)
            return False
        self._current, self._stamp = fresh, stamp
        log.info("loaded TLS certificate %s", self.cert_file)
        return True

    async def watch(self, interval: float, forced: asyncio.Event) -> None:
        """Reload every ``interval``, and at once when ``forced`` is set (SIGHUP).

        Reading the files runs in a thread; the swap itself is one attribute,
        so a handshake sees the old context or the new one.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(forced.wait(), interval)
            force = forced.is_set()
            forced.clear()
            await asyncio.to_thread(self.reload, force=force)
