"""Read a whole upstream body without letting it grow without bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from multidict import CIMultiDictProxy, MultiDictProxy
from yarl import URL

__all__ = ["Answer", "BodyTooLarge", "read_limited"]


class _Body(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class Answer(Protocol):
    """The parts of an upstream response its readers use; aiohttp's ClientResponse has them."""

    @property
    def content_length(self) -> int | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content(self) -> _Body: ...

    @property
    def links(self) -> MultiDictProxy[MultiDictProxy[str | URL]]:
        """The Link header (RFC 8288), parsed, by relation."""


class BodyTooLarge(Exception):
    pass


async def read_limited(resp: Answer, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge(resp.content_length)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(len(body))
    return bytes(body)
