"""The local disk tier of the S3 storage: copies of the hottest blobs and manifests, LRU within ``storage.local_size``.

It is the filesystem cache's ``ContentStore`` on ``<data_dir>/cache`` (see
``layout``), holding only content that is verified and already in the
bucket (or, for a manifest, being put there), so a copy here is never the
only one and may go at any time. It fills from a download this replica made,
and from a whole blob it streamed from the bucket, hashed on the way and kept
only if it matches. Reads try it first: with the bucket unreachable, what is
here is still served.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from proxy.reference import Digest
from proxy.storage.base import ContentKind, StorageFull
from proxy.storage.content import ContentStore
from proxy.storage.files import IoPool, pwrite_all
from proxy.storage.layout import Layout

__all__ = ["LocalTier"]

log = logging.getLogger(__name__)


class LocalTier:
    def __init__(self, data_dir: Path, io: IoPool, *, max_size: int, on_mismatch: Callable[[Digest], None]) -> None:
        self.layout = Layout(data_dir)
        self.io = io
        # Told of a blob that was read whole from the bucket and did not hash to its digest.
        self.on_mismatch = on_mismatch
        self.content = ContentStore(self.layout, io, max_size=max_size)
        self.disk_full = 0
        self._filling: set[Digest] = set()

    def load(self) -> None:
        """Clean up after a crash and index what is on disk. Blocking: run once, before serving."""
        self.content.load()

    def free_space(self) -> int:
        """Of the disk it is on. Blocking."""
        return shutil.disk_usage(self.layout.root).free

    def fits(self, size: int) -> bool:
        return size <= self.content.max_size

    async def keep(self, temp: Path, kind: ContentKind, digest: Digest, size: int) -> None:
        """Take a verified, fsynced temp file as content, or remove it if it cannot be kept here."""
        try:
            if self.fits(size):
                await self.content.commit(temp, kind, digest, size)
                return
        except OSError as exc:
            self._failed(kind, digest, exc)
        await self.io.run(temp.unlink, missing_ok=True)

    async def put(self, kind: ContentKind, digest: Digest, data: bytes) -> None:
        try:
            if self.fits(len(data)):
                await self.content.put(kind, digest, data)
        except OSError as exc:
            self._failed(kind, digest, exc)

    def filler(self, digest: Digest, size: int) -> _Fill | None:
        """A sink that keeps a copy of the blob being read whole from the bucket; None if it is no use here."""
        if not self.fits(size) or digest in self._filling or self.content.size(ContentKind.BLOB, digest) is not None:
            return None
        self._filling.add(digest)
        return _Fill(self, digest)

    def _failed(self, kind: ContentKind, digest: Digest, exc: OSError) -> None:
        if StorageFull.caused(exc):
            self.disk_full += 1
        log.warning("not keeping %s %s on the local disk: %s", kind.value, digest, exc)


class _Fill:
    """Writes a blob's pieces to a temp file and hashes them; it becomes content only if the whole matches."""

    def __init__(self, tier: LocalTier, digest: Digest) -> None:
        self._tier = tier
        self._digest = digest
        self._hasher = digest.hasher()
        self._file: tuple[int, Path] | None = None
        self._written = 0
        self._failed = False

    async def feed(self, chunk: bytes) -> None:
        if self._failed:
            return
        try:
            if self._file is None:
                self._file = await self._tier.io.run(self._tier.layout.temp_file)
            fd, offset = self._file[0], self._written
            self._written += len(chunk)
            await self._tier.io.run(self._write, fd, chunk, offset)
        except OSError as exc:
            # Serving goes on: only the copy is given up.
            self._failed = True
            self._tier._failed(ContentKind.BLOB, self._digest, exc)

    def _write(self, fd: int, chunk: bytes, offset: int) -> None:
        pwrite_all(fd, chunk, offset)
        self._hasher.update(chunk)

    async def finish(self) -> None:
        self._tier._filling.discard(self._digest)
        if self._file is None or self._failed or self._hasher.hexdigest() != self._digest.hex:
            if not self._failed:
                self._tier.on_mismatch(self._digest)
            self.abandon()
            return
        (fd, temp), self._file = self._file, None
        try:
            await self._tier.io.run(_sync_and_close, fd)
        except OSError as exc:
            self._tier._failed(ContentKind.BLOB, self._digest, exc)
            await self._tier.io.run(temp.unlink, missing_ok=True)
            return
        await self._tier.keep(temp, ContentKind.BLOB, self._digest, self._written)

    def abandon(self) -> None:
        self._tier._filling.discard(self._digest)
        if self._file is not None:
            (fd, temp), self._file = self._file, None
            self._tier.io.submit(lambda: _remove(fd, temp))


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(fd: int, temp: Path) -> None:
    os.close(fd)
    temp.unlink(missing_ok=True)
