"""Verified small content (manifests) kept in memory, for both storages: warm manifest requests are the proxy's
busiest path, and from here they need no file I/O, no network and no hashing."""

from __future__ import annotations

from collections import OrderedDict

from proxy.reference import Digest
from proxy.storage.base import ContentKind

__all__ = ["SmallContent"]


class SmallContent:
    """Bounded by total size, least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._used = 0
        self._items: OrderedDict[tuple[ContentKind, Digest], bytes] = OrderedDict()

    def get(self, key: tuple[ContentKind, Digest]) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: tuple[ContentKind, Digest], data: bytes) -> None:
        if len(data) > self._max_bytes // 16 or key in self._items:
            return
        self._items[key] = data
        self._used += len(data)
        while self._used > self._max_bytes:
            self._used -= len(self._items.popitem(last=False)[1])

    def discard(self, key: tuple[ContentKind, Digest]) -> None:
        data = self._items.pop(key, None)
        if data is not None:
            self._used -= len(data)
