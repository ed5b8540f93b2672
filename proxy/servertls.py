"""Serving the proxy itself over HTTPS, with certificates reloaded from disk.

cert-manager and similar tools replace the files in place. Loading the new
pair into the same SSLContext changes what new handshakes present, while
established connections carry on untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

__all__ = ["CertReloader"]

log = logging.getLogger(__name__)


class CertReloader:
    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_file, key_file)
        self._stamp = self._files_stamp()

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
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Often a rotation caught halfway (new cert, old key): try again next time.
            log.warning("keeping the current TLS certificate: cannot load %s: %s", self.cert_file, exc)
            return False
        self._stamp = stamp
        log.info("loaded TLS certificate %s", self.cert_file)
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()
