"""Verified content by digest, bounded by size with least-recently-used eviction.

Files enter only through ``commit`` (a rename of a fully written, verified and
fsynced temp file), so nothing here is ever partial. Readers take a lease for
as long as they stream; eviction skips leased entries, and an unlinked file
stays readable through an open descriptor anyway, so no reader is cut short.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from proxy.reference import Digest, parse_digest, InvalidReference
from proxy.storage.layout import Layout

__all__ = ["ContentStore"]

log = logging.getLogger(__name__)


class ContentStore:
    def __init__(self, layout: Layout, *, max_size: int) -> None:
        self.layout = layout
        self.max_size = max_size
        self.used = 0
        self.evictions = 0
        # Oldest access first; moved to the end on every hit.
        self._entries: OrderedDict[Digest, int] = OrderedDict()
        self._leases: Counter[Digest] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Clean up after a crash and index what is on disk. Blocking: run at start."""
        self.layout.create()
        shutil.rmtree(self.layout.tmp)
        self.layout.tmp.mkdir()
        found: list[tuple[float, Digest, int]] = []
        for alg_dir in self.layout.blobs.iterdir():
            for path in alg_dir.glob("*/*"):
                try:
                    digest = parse_digest(f"{alg_dir.name}:{path.name}")
                    st = path.stat()
                except (InvalidReference, OSError):
                    log.warning("removing unexpected file in the cache: %s", path)
                    path.unlink(missing_ok=True)
                    continue
                found.append((st.st_mtime, digest, st.st_size))
        for _, digest, size in sorted(found, key=lambda item: item[0]):
            self._entries[digest] = size
            self.used += size
        self._evict()

    def size(self, digest: Digest) -> int | None:
        size = self._entries.get(digest)
        if size is not None:
            self._entries.move_to_end(digest)
        return size

    @contextmanager
    def open(self, digest: Digest) -> Iterator[tuple[BinaryIO, int] | None]:
        """Open content for reading, leased against eviction while the block runs."""
        if digest not in self._entries:
            yield None
            return
        path = self.layout.blob(digest)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            # Removed behind our back: forget it, the caller refetches.
            self._forget(digest)
            yield None
            return
        self._entries.move_to_end(digest)
        self._leases[digest] += 1
        try:
            os.utime(f.fileno())
            yield f, os.fstat(f.fileno()).st_size
        finally:
            f.close()
            self._leases[digest] -= 1
            if not self._leases[digest]:
                del self._leases[digest]

    def read_small(self, digest: Digest) -> bytes | None:
        with self.open(digest) as opened:
            return None if opened is None else opened[0].read()

    def commit(self, temp: Path, digest: Digest, size: int) -> None:
        """Move a verified, fsynced temp file into place and account for it."""
        final = self.layout.blob(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        if digest not in self._entries:
            self.used += size
        self._entries[digest] = size
        self._entries.move_to_end(digest)
        self._evict()

    def put(self, digest: Digest, data: bytes) -> None:
        """Store small verified content (manifests) synchronously."""
        if digest in self._entries and self.layout.blob(digest).exists():
            self._entries.move_to_end(digest)
            return
        fd, temp = self.layout.temp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.commit(temp, digest, len(data))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _forget(self, digest: Digest) -> None:
        size = self._entries.pop(digest, None)
        if size is not None:
            self.used -= size

    def _evict(self) -> None:
        if self.used <= self.max_size:
            return
        for digest in list(self._entries):
            if self.used <= self.max_size:
                break
            if self._leases.get(digest):
                continue
            self.layout.blob(digest).unlink(missing_ok=True)
            self._forget(digest)
            self.evictions += 1
            log.info("evicted %s from the cache", digest)
