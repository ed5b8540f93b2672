"""The storage ``storage.backend`` names, opened and ready to serve.

The S3 backend's modules (and through them boto3 and psycopg) are imported
only when it is chosen, so the embedded default loads neither. The settings
arrive as whatever has their shape: ``proxy.config`` is a sibling layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from proxy.storage.base import Storage
from proxy.storage.filesystem import FilesystemStorage

__all__ = ["OpenedStorage", "StorageOptions", "open_storage"]


class OpenedStorage(Storage, Protocol):
    async def close(self) -> None: ...


class _Cache(Protocol):
    @property
    def max_size(self) -> int: ...


class _Backend(Protocol):
    @property
    def backend(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def region(self) -> str | None: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def redirect(self) -> bool: ...
    @property
    def local_size(self) -> int: ...


class _State(Protocol):
    @property
    def url(self) -> str | None: ...


class StorageOptions(Protocol):
    """What of ``proxy.config.Settings`` the storage reads."""

    @property
    def data_dir(self) -> Path: ...
    @property
    def cache(self) -> _Cache: ...
    @property
    def storage(self) -> _Backend: ...
    @property
    def state(self) -> _State: ...


async def open_storage(settings: StorageOptions) -> OpenedStorage:
    """Build and start the configured storage; ``close`` it when done."""
    chosen = settings.storage
    if chosen.backend != "s3":
        filesystem = FilesystemStorage(settings.data_dir, max_size=settings.cache.max_size)
        await filesystem.start()
        return filesystem
    from proxy.storage.s3 import S3Storage

    if settings.state.url is None:
        raise ValueError("storage.backend s3 needs state.url")
    s3 = S3Storage(settings.data_dir, bucket=chosen.bucket, prefix=chosen.prefix, region=chosen.region,
                   endpoint_url=chosen.endpoint_url, redirect=chosen.redirect, local_size=chosen.local_size,
                   max_size=settings.cache.max_size, state_url=settings.state.url)
    try:
        await s3.start()
    except BaseException:
        await s3.close()
        raise
    return s3
