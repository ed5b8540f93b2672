"""The one interface the pull-through logic uses to reach the cache.

Every method that may touch a disk (or, later, object storage) is a
coroutine, so no caller can block the event loop on it. Two promises hold
for every implementation:

- **verified before visible**: content becomes readable under its digest only
  through ``PartialBlob.commit`` (which checks the digest) or ``put``; a
  reader never sees a partial or unverified object;
- **served only through links**: a repository's links record under which
  access (credential, or none) it was seen to hold a digest, and callers
  serve content for a repository only through them.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from proxy.reference import Digest, Target
from proxy.storage.files import FileRange

__all__ = ["Body", "CacheStats", "Content", "ContentKind", "DigestMismatch", "FileRange", "FillClaim", "ManifestLink",
           "PartialBlob", "Storage", "StorageFull", "StorageUnavailable", "TagRecord", "VerifyReport"]


class ContentKind(enum.Enum):
    BLOB = "blob"
    MANIFEST = "manifest"


class DigestMismatch(Exception):
    """Content did not hash to the digest it was stored under; nothing was kept."""


class StorageUnavailable(OSError):
    """The cache's shared storage could not be reached; nothing was read from it or sent of it."""


class StorageFull(OSError):
    """No room to store this: the cache's disk is full, or the content does not fit under ``cache.max_size``
    beside what is being read and what other downloads have reserved. Nothing of it was kept."""

    @staticmethod
    def caused(exc: BaseException) -> bool:
        return isinstance(exc, StorageFull) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


@dataclass(frozen=True)
class TagRecord:
    digest: str
    media_type: str
    size: int
    checked_at: float
    access: str = ""

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.checked_at


@dataclass(frozen=True)
class ManifestLink:
    media_type: str
    access: str


@dataclass(frozen=True)
class CacheStats:
    used: int
    max_size: int
    evictions: int
    blobs: int
    manifests: int
    reserved: int = 0   # bytes reserved by downloads in flight, counted against max_size
    disk_full: int = 0  # writes that found the disk full
    backend: str = "filesystem"
    backend_errors: int = 0  # calls to object storage that failed


@dataclass
class VerifyReport:
    """One re-hash of the whole cache, filled in as it runs, so it is also its progress."""

    started: float = field(default_factory=time.time)
    finished: float | None = None
    objects: int = 0      # held when the run began
    checked: int = 0      # hashed to the end, or found of the wrong size
    bytes: int = 0        # hashed
    mismatched: int = 0   # wrong size or wrong hash: never served again
    quarantined: int = 0  # of those, moved aside for inspection
    missing: int = 0      # gone or unreadable: forgotten, fetched again on the next request
    skipped: int = 0      # evicted or dropped while the run went on


class Body(Protocol):
    """Bytes of cached content that are not a local file: read from object storage as they are sent."""

    @property
    def count(self) -> int: ...

    def pieces(self) -> AsyncIterator[bytes]: ...


class Content(Protocol):
    """Cached content opened for reading, leased against eviction until its context ends."""

    @property
    def size(self) -> int: ...

    def span(self, start: int, end: int) -> FileRange | Body: ...


class FillClaim(Protocol):
    """The right to download a blob into a cache that several processes share; ``release`` once it is committed or dropped."""

    async def release(self) -> None: ...


class PartialBlob(Protocol):
    """A blob on its way into the cache: appended by one writer, readable by many while it grows.

    ``close`` once nobody reads it any more; reads and sends still running
    finish first.
    """

    @property
    def written(self) -> int:
        """Bytes stored; after a failed ``append``, those of it that were."""

    @property
    def hashed(self) -> int:
        """Bytes hashed, which after a failed ``append`` may be more than were stored."""

    async def append(self, chunks: Sequence[bytes]) -> None:
        """Store and hash the next bytes, off the event loop."""

    def span(self, start: int, end: int) -> FileRange:
        """Written bytes, for readers that follow the download."""

    def matches(self) -> bool:
        """Whether what was appended hashes to the digest."""

    async def commit(self) -> None:
        """Make it readable under its digest; raises ``DigestMismatch`` and keeps nothing if it does not hash to it."""

    async def discard(self) -> None:
        """Drop what was written; it never becomes content."""

    async def uncache(self) -> hashlib._Hash:
        """Stop storing: what was written stays readable until ``close`` but never becomes content.

        Returns the hash of what was appended, for the caller to go on with.
        """

    def close(self) -> None: ...


class Storage(Protocol):
    def size(self, kind: ContentKind, digest: Digest) -> int | None:
        """What the cache holds, from memory; a lookup counts as use for eviction."""

    async def claim_fill(self, digest: Digest) -> FillClaim | None:
        """The claim to download ``digest``; None while another process sharing the cache downloads it."""

    async def wait_fill(self, digest: Digest) -> None:
        """Return once another process's download of ``digest`` ended (committed, failed, or its process died),
        or after a few seconds: the caller looks at ``size`` and claims again."""

    async def redirect_url(self, kind: ContentKind, digest: Digest) -> str | None:
        """Where clients may fetch the content themselves (a presigned URL), when the storage is set to redirect."""

    def open(self, kind: ContentKind, digest: Digest) -> AbstractAsyncContextManager[Content | None]: ...

    async def read_small(self, kind: ContentKind, digest: Digest) -> bytes | None:
        """The whole content, checked against its digest; corrupt content is dropped and reads as absent."""

    async def put(self, kind: ContentKind, digest: Digest, data: bytes) -> None:
        """Store small content (a manifest) whose digest the caller verified."""

    async def begin_blob(self, digest: Digest, size: int | None = None) -> PartialBlob:
        """Room for a download of ``size`` bytes (if known), reserved against ``cache.max_size``.

        Raises ``StorageFull`` when it cannot fit: ``append`` does too, when the
        disk fills or an unknown size outgrows what can be reserved.
        """

    async def blob_access(self, target: Target, digest: Digest) -> str | None:
        """The access the blob was last seen with in this repository, or None if never."""

    async def link_blob(self, target: Target, digest: Digest, access: str) -> None: ...

    async def registry_holds(self, registry: str, digest: Digest) -> bool:
        """Whether a repository of ``registry`` was seen to hold the blob."""

    async def manifest_link(self, target: Target, digest: Digest) -> ManifestLink | None: ...

    async def link_manifest(self, target: Target, digest: Digest, link: ManifestLink) -> None: ...

    async def tag(self, target: Target, tag: str) -> TagRecord | None: ...

    async def set_tag(self, target: Target, tag: str, record: TagRecord) -> None: ...

    def stats(self) -> CacheStats: ...

    async def check_writable(self) -> None:
        """Raise OSError when new content could not be stored."""

    async def free_space(self) -> int: ...

    async def verify(self, report: VerifyReport) -> None:
        """Re-hash every cached object while serving; one that does not match is set aside and fetched again."""
