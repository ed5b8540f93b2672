"""The cache on the local filesystem: the embedded default implementation of ``Storage``.

Content and repository links live under ``<data_dir>/cache`` (see
``layout``). A download in progress is a temp file that readers follow as
it grows; it becomes content by rename only after its digest checks out.

A full disk is not an error of the pull: a download that finds it full
raises ``StorageFull`` (its caller serves it uncached), and a link or tag
record that cannot be written is left unwritten, as if never seen; the
next request checks or fetches again. Each is counted in ``stats``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from proxy.reference import Digest, Target
from proxy.storage.base import CacheStats, ContentKind, DigestMismatch, ManifestLink, StorageFull, TagRecord, VerifyReport
from proxy.storage.content import ContentStore, OpenedContent
from proxy.storage.files import IoPool
from proxy.storage.index import RepositoryIndex
from proxy.storage.layout import Layout
from proxy.storage.small import SmallContent
from proxy.storage.staging import StagedBlob
from proxy.storage.verify import verify_content

__all__ = ["FilesystemStorage"]

log = logging.getLogger(__name__)

# Hashing this much takes longer than handing it to a thread.
_HASH_INLINE = 256 * 1024


class _PartialBlob(StagedBlob):
    def __init__(self, digest: Digest, fd: int, temp: Path, content: ContentStore, io: IoPool, *,
                 reserved: int, on_full: Callable[[BaseException], None]) -> None:
        super().__init__(digest, fd, temp, content, io, reserved=reserved, on_full=on_full)
        self._content = content

    async def commit(self) -> None:
        if not self.matches():
            raise DigestMismatch(str(self._digest))
        try:
            await self._fd.use(os.fsync)
            await self._content.commit(self._temp, ContentKind.BLOB, self._digest, self.written,
                                       reserved=self._reserved)
        except OSError as exc:
            if StorageFull.caused(exc):
                self._on_full(exc)
                raise StorageFull(exc.errno, f"the cache's disk is full: {exc.strerror}") from None
            raise
        self._reserved = 0


class _OnlyFiller:
    async def release(self) -> None:
        return None


_ONLY_FILLER = _OnlyFiller()


class FilesystemStorage:
    def __init__(self, data_dir: Path, *, max_size: int, memory: int = 32 * 1024 * 1024) -> None:
        self.layout = Layout(data_dir)
        self._io = IoPool()
        self._content = ContentStore(self.layout, self._io, max_size=max_size)
        self._index = RepositoryIndex(self.layout, self._io)
        self._small = SmallContent(memory)
        self._disk_full = 0

    async def start(self) -> None:
        await self._io.run(self._content.load)

    async def close(self) -> None:
        await asyncio.to_thread(self._io.close)

    def size(self, kind: ContentKind, digest: Digest) -> int | None:
        return self._content.size(kind, digest)

    async def claim_fill(self, digest: Digest) -> _OnlyFiller:
        # This process is the only one filling this cache: its downloads share one per digest already.
        return _ONLY_FILLER

    async def wait_fill(self, digest: Digest) -> None:
        return None

    async def redirect_url(self, kind: ContentKind, digest: Digest) -> str | None:
        return None

    @asynccontextmanager
    async def open(self, kind: ContentKind, digest: Digest) -> AsyncIterator[OpenedContent | None]:
        async with self._content.open(kind, digest) as opened:
            yield opened

    async def read_small(self, kind: ContentKind, digest: Digest) -> bytes | None:
        key = (kind, digest)
        if self._content.size(kind, digest) is None:  # evicted or dropped: not served from memory either
            self._small.discard(key)
            return None
        data = self._small.get(key)
        if data is not None:
            return data
        async with self._content.open(kind, digest) as opened:
            if opened is None:
                return None
            data = b"".join([chunk async for chunk in opened.span(0, opened.size).pieces()])
        if not await _hashes_to(digest, data):
            await self._content.drop(kind, digest)
            return None
        self._small.put(key, data)
        return data

    async def put(self, kind: ContentKind, digest: Digest, data: bytes) -> None:
        # Small content that does not fit is not stored; its links and tags are then not written either.
        async with self._unless_full(f"{kind.value} {digest}"):
            await self._content.put(kind, digest, data)

    async def begin_blob(self, digest: Digest, size: int | None = None) -> _PartialBlob:
        reserved = size or 0
        await self._content.reserve(reserved)
        try:
            fd, temp = await self._io.run(self.layout.temp_file)
        except OSError as exc:
            self._content.release(reserved)
            if StorageFull.caused(exc):
                self._count_full(exc)
                raise StorageFull(exc.errno, f"the cache's disk is full: {exc.strerror}") from None
            raise
        return _PartialBlob(digest, fd, temp, self._content, self._io, reserved=reserved, on_full=self._count_full)

    async def blob_access(self, target: Target, digest: Digest) -> str | None:
        return await self._index.blob_access(target, digest)

    async def link_blob(self, target: Target, digest: Digest, access: str) -> None:
        async with self._unless_full(f"the link of {digest} in {target}"):
            await self._index.link_blob(target, digest, access)

    async def registry_holds(self, registry: str, digest: Digest) -> bool:
        return await self._index.registry_holds(registry, digest)

    async def manifest_link(self, target: Target, digest: Digest) -> ManifestLink | None:
        return await self._index.manifest(target, digest)

    async def link_manifest(self, target: Target, digest: Digest, link: ManifestLink) -> None:
        async with self._unless_full(f"the link of {digest} in {target}"):
            await self._index.link_manifest(target, digest, link)

    async def tag(self, target: Target, tag: str) -> TagRecord | None:
        return await self._index.tag(target, tag)

    async def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        async with self._unless_full(f"tag {tag} of {target}"):
            await self._index.set_tag(target, tag, record)

    @asynccontextmanager
    async def _unless_full(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except OSError as exc:
            if not StorageFull.caused(exc):
                raise
            self._count_full(exc)
            log.warning("not caching %s: %s", what, exc)

    def _count_full(self, exc: BaseException) -> None:
        self._disk_full += 1

    def stats(self) -> CacheStats:
        c = self._content
        return CacheStats(used=c.used, max_size=c.max_size, evictions=c.evictions,
                          blobs=c.counts[ContentKind.BLOB], manifests=c.counts[ContentKind.MANIFEST],
                          reserved=c.reserved, disk_full=self._disk_full)

    async def check_writable(self) -> None:
        await self._io.run(_probe_write, self.layout.tmp)

    async def free_space(self) -> int:
        return (await self._io.run(shutil.disk_usage, self.layout.root)).free


    async def verify(self, report: VerifyReport) -> None:
        # What fails the check leaves the manifest memory too, so it is not served from there either.
        await verify_content(self._content, self.layout, self._io, report,
                             on_removed=lambda kind, digest: self._small.discard((kind, digest)))


async def _hashes_to(digest: Digest, data: bytes) -> bool:
    if len(data) <= _HASH_INLINE:
        return digest.matches(data)
    return await asyncio.to_thread(digest.matches, data)


def _probe_write(directory: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=directory, prefix="ready-") as f:
        f.write(b"ok")
        f.flush()
