"""Verified content by digest, bounded by size with least-recently-used eviction.

Blobs and manifests share one size budget and one LRU order, in separate
directories so each can be counted. Files enter only through ``commit`` (a
rename of a fully written, verified and fsynced temp file), so nothing here
is ever partial. Readers take a lease for as long as they stream; eviction
skips leased entries, and an unlinked file stays readable through an open
descriptor anyway, so no reader is cut short.

Downloads in flight count too: each reserves its declared size (or what it
has written, when the upstream declares none) before writing, and eviction
makes room for it then. A reservation that cannot fit, even with everything
unleased evicted, is refused with ``StorageFull``: that blob is not cached.
So committed content, plus leased content, plus temp files, stays under
``max_size``, and a blob larger than it never enters only to be evicted.

The accounting lives in memory and changes only on the event loop; the
files themselves are touched only in the storage's threads.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from proxy.reference import Digest, InvalidReference, parse_digest
from proxy.storage.base import ContentKind, StorageFull
from proxy.storage.files import FileRange, IoPool, SharedFd, write_all
from proxy.storage.layout import Layout

__all__ = ["ContentStore", "OpenedContent"]

log = logging.getLogger(__name__)

_Key = tuple[ContentKind, Digest]


@dataclass
class OpenedContent:
    fd: SharedFd
    size: int

    def span(self, start: int, end: int) -> FileRange:
        return FileRange(self.fd, start, end - start)


class ContentStore:
    def __init__(self, layout: Layout, io: IoPool, *, max_size: int) -> None:
        self.layout = layout
        self.max_size = max_size
        self.used = 0
        self.reserved = 0
        self.evictions = 0
        self._io = io
        # Oldest access first; moved to the end on every hit.
        self._entries: OrderedDict[_Key, int] = OrderedDict()
        self._leases: Counter[_Key] = Counter()
        self.counts: Counter[ContentKind] = Counter()

    def load(self) -> None:
        """Clean up after a crash and index what is on disk. Blocking: run once, before serving."""
        self.layout.create()
        shutil.rmtree(self.layout.tmp)
        self.layout.tmp.mkdir()
        found: list[tuple[float, _Key, int]] = []
        for kind in ContentKind:
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
        for path in self._choose_victims():
            path.unlink(missing_ok=True)

    def size(self, kind: ContentKind, digest: Digest) -> int | None:
        size = self._entries.get((kind, digest))
        if size is not None:
            self._entries.move_to_end((kind, digest))
        return size

    @asynccontextmanager
    async def open(self, kind: ContentKind, digest: Digest) -> AsyncIterator[OpenedContent | None]:
        """Open content for reading, leased against eviction while the block runs."""
        key = (kind, digest)
        expected = self._entries.get(key)
        if expected is None:
            yield None
            return
        self._leases[key] += 1  # before any await: eviction must skip it from now on
        try:
            try:
                fd, size = await self._io.run(_open_for_reading, self.layout.content(kind, digest))
            except FileNotFoundError:
                # Removed behind our back: forget it, the caller refetches.
                self._forget(key)
                yield None
                return
            shared = SharedFd(fd, self._io)
            try:
                if size != expected:
                    log.warning("cached %s %s has %d bytes instead of %d; dropping it", kind.value, digest, size,
                                expected)
                    await self.drop(kind, digest)
                    yield None
                    return
                self._entries.move_to_end(key)
                yield OpenedContent(shared, size)
            finally:
                shared.release()
        finally:
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]

    async def commit(self, temp: Path, kind: ContentKind, digest: Digest, size: int, *, reserved: int = 0) -> None:
        """Move a verified, fsynced temp file into place and account for it instead of its reservation."""
        await self._io.run(_move_into_place, temp, self.layout.content(kind, digest))
        self.release(reserved)
        self._add((kind, digest), size)
        await self._evict(keep=(kind, digest))

    async def reserve(self, size: int) -> None:
        """Count ``size`` more bytes of a temp file against the budget, evicting to make room; ``StorageFull`` if none."""
        leased = sum(self._entries.get(key, 0) for key in self._leases)
        if self.reserved + leased + size > self.max_size:
            raise StorageFull(f"{size} more bytes do not fit under cache.max_size ({self.max_size}) beside "
                              f"{self.reserved} reserved by downloads and {leased} being read")
        self.reserved += size
        await self._evict()

    def release(self, size: int) -> None:
        self.reserved -= size

    async def put(self, kind: ContentKind, digest: Digest, data: bytes) -> None:
        """Store small verified content: stage and fsync a temp file, then commit it."""
        if self.size(kind, digest) is not None:
            return
        temp = await self._io.run(_stage, self.layout, data)
        await self.commit(temp, kind, digest, len(data))

    async def drop(self, kind: ContentKind, digest: Digest) -> None:
        """Forget content found corrupt, so the next request fetches it again."""
        self._forget((kind, digest))
        await self._io.run(self.layout.content(kind, digest).unlink, missing_ok=True)

    # For ``proxy.storage.verify``: a walk over a snapshot that leases each entry while it hashes it.

    def listing(self) -> list[_Key]:
        """What the cache holds now; reading it is no use for eviction."""
        return list(self._entries)

    @contextmanager
    def lease(self, kind: ContentKind, digest: Digest) -> Iterator[int | None]:
        """The entry's size, leased against eviction while the block runs; None if it is no longer held."""
        key = (kind, digest)
        size = self._entries.get(key)
        if size is None:
            yield None
            return
        self._leases[key] += 1
        try:
            yield size
        finally:
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]

    def forget(self, kind: ContentKind, digest: Digest) -> None:
        """Stop accounting for content whose file was set aside or is gone, so the next request fetches it."""
        self._forget((kind, digest))

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

    def _choose_victims(self, keep: _Key | None = None) -> list[Path]:
        """Forget the least recently used unleased entries until under budget; their files to unlink."""
        victims = []
        for key in list(self._entries):
            if self.used + self.reserved <= self.max_size:
                break
            if self._leases.get(key) or key == keep:
                continue
            kind, digest = key
            self._forget(key)
            self.evictions += 1
            victims.append(self.layout.content(kind, digest))
            log.info("evicted %s %s from the cache", kind.value, digest)
        return victims

    async def _evict(self, keep: _Key | None = None) -> None:
        if self.used + self.reserved > self.max_size:
            victims = self._choose_victims(keep)
            await self._io.run(_unlink_all, victims)


def _open_for_reading(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.utime(fd)  # the access time orders eviction after a restart
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


def _move_into_place(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)


def _stage(layout: Layout, data: bytes) -> Path:
    fd, temp = layout.temp_file()
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return temp


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
