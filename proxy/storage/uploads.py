"""A blob download on its way into the bucket: staged in a local temp file, uploaded from it while it streams.

The temp file is what readers behind the head follow, as with the
filesystem cache. Every full ``PART`` of it is read back in a thread and sent
as the next part of a multipart upload to the blob's final key, at most
``IN_FLIGHT`` parts at once (a slower bucket holds the download back, within
the bytes ``Download`` lets run ahead). An upload is visible in the bucket
only once completed, and ``commit`` completes it only after the digest
matched; ``discard`` and ``uncache`` abort it. A blob smaller than a part is
one PUT, at commit. Once complete, any other upload of the same blob is
aborted: its writer died mid-fill, or the fill claim its committer holds
would not have been free.

If the bucket fails while the blob streams, or the blob grows past
``cache.max_size``, ``append`` raises ``StorageFull``: the download goes on
uncached, as on a full disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from proxy.reference import Digest
from proxy.storage.base import ContentKind, DigestMismatch, StorageFull
from proxy.storage.files import IoPool
from proxy.storage.objects import ObjectStore, ObjectStoreError
from proxy.storage.staging import StagedBlob

__all__ = ["IN_FLIGHT", "PART", "Committed", "S3PartialBlob"]

log = logging.getLogger(__name__)

PART = 8 * 1024 * 1024
IN_FLIGHT = 2

# Told of a blob now complete in the bucket, with its fsynced temp file: records it, and keeps or removes the file.
Committed = Callable[[Digest, int, Path], Awaitable[None]]


class _Unbounded:
    """The temp files of uploads are bounded by the disk only: a blob bigger than the local tier still goes to
    the bucket."""

    async def reserve(self, size: int) -> None:
        return None

    def release(self, size: int) -> None:
        return None


class S3PartialBlob(StagedBlob):
    def __init__(self, digest: Digest, fd: int, temp: Path, io: IoPool, *, store: ObjectStore,
                 on_full: Callable[[BaseException], None], committed: Committed, max_size: int) -> None:
        super().__init__(digest, fd, temp, _Unbounded(), io, reserved=0, on_full=on_full)
        self._store = store
        self._key = store.key(ContentKind.BLOB, digest)
        self._committed = committed
        self._max_size = max_size
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self._parts: deque[asyncio.Future[str]] = deque()
        self._sent = 0  # bytes of the file handed to parts
        self._stopped = False

    async def append(self, chunks: Sequence[bytes]) -> None:
        if self.written + sum(map(len, chunks)) > self._max_size:
            # Nothing of these chunks is written or hashed: the download hashes them itself from here on.
            await self._abort()
            raise StorageFull(f"{self._digest} grew larger than cache.max_size")
        await super().append(chunks)
        try:
            while not self._stopped and self.written - self._sent >= PART:
                await self._send_part(self._sent, PART)
        except ObjectStoreError as exc:
            await self._abort()
            raise StorageFull(f"object storage failed: {exc}") from None

    async def commit(self) -> None:
        if not self.matches():
            raise DigestMismatch(str(self._digest))
        if self._stopped:
            raise ObjectStoreError(f"the upload of {self._digest} was stopped")
        await self._fd.use(os.fsync)
        if self._upload_id is None:
            data = await self._fd.pread(self.written, 0)
            await self._store.put(self._key, data)
        else:
            if self.written > self._sent:
                await self._send_part(self._sent, self.written - self._sent)
            while self._parts:
                self._etags.append(await self._parts.popleft())
            await self._store.complete_upload(self._key, self._upload_id, self._etags)
            self._upload_id = None
            await self._abort_abandoned()
        self._stopped = True
        await self._committed(self._digest, self.written, self._temp)

    async def discard(self) -> None:
        await self._abort()
        await super().discard()

    async def uncache(self) -> hashlib._Hash:
        await self._abort()
        return await super().uncache()

    async def _abort_abandoned(self) -> None:
        """Abort other uploads of this blob: begun by a replica that died mid-fill, as the fill claim this one
        holds tells. Done now, the bucket keeps no part of them even before the janitor's next round."""
        try:
            for upload in await self._store.uploads(under=self._key):
                if upload.key == self._key:
                    await self._store.abort_upload(upload.key, upload.upload_id)
        except ObjectStoreError as exc:
            log.warning("the janitor will abort abandoned uploads of %s: %s", self._digest, exc)

    async def _send_part(self, offset: int, size: int) -> None:
        if self._upload_id is None:
            self._upload_id = await self._store.create_upload(self._key)
        while len(self._parts) >= IN_FLIGHT:
            self._etags.append(await self._parts.popleft())
        number = len(self._etags) + len(self._parts) + 1
        self._sent = offset + size
        self._parts.append(asyncio.ensure_future(self._upload(self._upload_id, number, offset, size)))

    async def _upload(self, upload_id: str, number: int, offset: int, size: int) -> str:
        data = await self._fd.pread(size, offset)
        return await self._store.upload_part(self._key, upload_id, number, data)

    async def _abort(self) -> None:
        """Stop uploading; an upload begun is aborted (or, with the bucket unreachable, left to the janitor).

        Parts on their way are waited for, not cancelled: their calls run on
        in their threads, and a part that lands after the abort would be kept
        (and billed) until the abort is repeated."""
        self._stopped = True
        parts, self._parts = list(self._parts), deque()
        await asyncio.gather(*parts, return_exceptions=True)
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            await self._store.abort_upload(self._key, upload_id)
        except ObjectStoreError as exc:
            log.warning("the janitor will abort the upload of %s: %s", self._digest, exc)
