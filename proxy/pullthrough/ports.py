"""What the pull-through logic says about each answer, and what it needs of the upstream client.

``CacheResult`` is what a client sees in ``X-Registry-Proxy-Cache`` and
what metrics count. ``Upstream`` is the small protocol the services call,
so the engine can be exercised with a counting fake instead of a network.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from proxy.errors import ErrorCode
from proxy.reference import Target
from proxy.upstream.body import Answer
from proxy.upstream.endpoints import EndpointKind

__all__ = ["STALE_OK", "BodySource", "CacheResult", "Upstream"]

# Upstream failures for which serving the last known content beats failing the pull.
STALE_OK = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.UNKNOWN, ErrorCode.TOOMANYREQUESTS})


class BodySource(enum.Enum):
    CACHE = "cache"
    UPSTREAM = "upstream"


class CacheResult(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    JOINED = "joined"  # shared a download already in flight
    REVALIDATED = "revalidated"
    STALE = "stale"

    @property
    def source(self) -> BodySource:
        return BodySource.UPSTREAM if self in (CacheResult.MISS, CacheResult.JOINED) else BodySource.CACHE


class Upstream(Protocol):
    def access_key(self, environment: str, registry: str) -> str:
        """Which access the environment's requests to this registry have now: a credential id, or "" for none."""

    def unresponsive(self, registry: str, message: str) -> None:
        """A request to the registry was given up on for taking too long: a failure, as a timeout would be."""

    def open(self, target: Target, method: str, path: str, *, env: str, kind: EndpointKind,
             headers: Mapping[str, str] | None = None,
             params: Mapping[str, str] | None = None) -> AbstractAsyncContextManager[Answer]: ...
