"""Verified content by digest, bounded by size with least-recently-used eviction.

Blobs and manifests share one size budget and one LRU order, in separate
directories so each can be counted. Files enter only through ``commit`` (a
rename of a fully written, verified and fsynced temp file), so nothing here
is ever partial. Readers take a lease for as long as they stream; eviction
skips leased entries, and an unlinked file stays readable through an open
descriptor anyway, so no reader is cut short.
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

from proxy.reference import Digest, InvalidReference, parse_digest
from proxy.storage.layout import KINDS, Layout

__all__ = ["ContentStore"]

log = logging.getLogger(__name__)

_Key = tuple[str, Digest]


class ContentStore:
    def __init__(self, layout: Layout, *, max_size: int) -> None:
        self.layout = layout
        self.max_size = max_size
        self.used = 0
        self.evictions = 0
        # Oldest access first; moved to the end on every hit.
        self._entries: OrderedDict[_Key, int] = OrderedDict()
        self._leases: Counter[_Key] = Counter()
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def load(self) -> None:
        """Clean up after a crash and index what is on disk. Blocking: run at start."""
        self.layout.create()
        shutil.rmtree(self.layout.tmp)
        self.layout.tmp.mkdir()
        found: list[tuple[float, _Key, int]] = []
        for kind in KINDS:
            for alg_dir in self.layout.content_root(kind).iterdir():
                for path in alg_dir.glob("*/*"):
                    try:
                        digest = parse_digest(f"{alg_dir.name}:{path.name}")
                        st = path.stat()
                    except (InvalidReference, OSError):
                        log.warning("removing unexpected file in the cache: %s", path)
                        path.unlink(missing_ok=True)
                        continue
                    found.append((st.st_mtime, (kind, digest), st.st_size))
        for _, key, size in sorted(found, key=lambda item: item[0]):
            self._add(key, size)
        self._evict()

    def size(self, digest: Digest, kind: str = "blob") -> int | None:
        size = self._entries.get((kind, digest))
        if size is not None:
            self._entries.move_to_end((kind, digest))
        return size

    @contextmanager
    def open(self, digest: Digest, kind: str = "blob") -> Iterator[tuple[BinaryIO, int] | None]:
        """Open content for reading, leased against eviction while the block runs."""
        key = (kind, digest)
        if key not in self._entries:
            yield None
            return
        try:
            f = self.layout.content(kind, digest).open("rb")
        except FileNotFoundError:
            # Removed behind our back: forget it, the caller refetches.
            self._forget(key)
            yield None
            return
        self._entries.move_to_end(key)
        self._leases[key] += 1
        try:
            os.utime(f.fileno())
            yield f, os.fstat(f.fileno()).st_size
        finally:
            f.close()
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]

    def read_small(self, digest: Digest, kind: str = "manifest") -> bytes | None:
        with self.open(digest, kind) as opened:
            return None if opened is None else opened[0].read()

    def commit(self, temp: Path, digest: Digest, size: int, kind: str = "blob") -> None:
        """Move a verified, fsynced temp file into place and account for it."""
        final = self.layout.content(kind, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        self._add((kind, digest), size)
        self._evict()

    def has(self, digest: Digest, kind: str = "manifest") -> bool:
        return (kind, digest) in self._entries and self.layout.content(kind, digest).exists()

    def stage(self, data: bytes) -> Path:
        """Write and fsync a temp file for ``commit``. Blocking, and touches no
        shared state, so callers run it in a thread."""
        fd, temp = self.layout.temp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp

    def put(self, digest: Digest, data: bytes, kind: str = "manifest") -> None:
        """Store small verified content synchronously (stage, then commit)."""
        if self.has(digest, kind):
            self._entries.move_to_end((kind, digest))
            return
        self.commit(self.stage(data), digest, len(data), kind)

    def _add(self, key: _Key, size: int) -> None:
        if key not in self._entries:
            self.used += size
            self.counts[key[0]] += 1
        else:
            self.used += size - self._entries[key]
        self._entries[key] = size
        self._entries.move_to_end(key)

    def _forget(self, key: _Key) -> None:
        size = self._entries.pop(key, None)
        if size is not None:
            self.used -= size
            self.counts[key[0]] -= 1

    def _evict(self) -> None:
        if self.used <= self.max_size:
            return
        for key in list(self._entries):
            if self.used <= self.max_size:
                break
            if self._leases.get(key):
                continue
            kind, digest = key
            self.layout.content(kind, digest).unlink(missing_ok=True)
            self._forget(key)
            self.evictions += 1
            log.info("evicted %s %s from the cache", kind, digest)
