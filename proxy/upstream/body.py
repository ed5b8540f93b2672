"""Read a whole upstream body without letting it grow without bound."""

from __future__ import annotations

import aiohttp

__all__ = ["BodyTooLarge", "read_limited"]


class BodyTooLarge(Exception):
    pass


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge(resp.content_length)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(len(body))
    return bytes(body)
