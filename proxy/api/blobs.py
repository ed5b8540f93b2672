"""GET and HEAD of blobs, with Range, streamed from cache or upstream."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from proxy.api.sendfile import BodySender
from proxy.api.state import OBSERVER, Services
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.blobs import BlobStreamError
from proxy.pullthrough.ports import CacheResult
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind
from proxy.upstream.endpoints import EndpointKind

__all__ = ["serve_blob"]

log = logging.getLogger(__name__)

# 18 digits is an exabyte; anything longer is not a range worth parsing.
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


async def serve_blob(request: web.Request, services: Services, target: Target, digest: Digest, *,
                     env: str) -> web.StreamResponse:
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        # Content addressed: it can never change.
        "Cache-Control": "max-age=31536000",
    }
    observer = request.config_dict[OBSERVER]
    if request.method == "HEAD":
        size, result = await services.blobs.stat(target, digest, env=env)
        observer.cache_result(EndpointKind.BLOB, result, target.registry)
        headers["X-Registry-Proxy-Cache"] = result.value
        if size is not None:
            headers["Content-Length"] = str(size)
        return web.Response(status=200, headers=headers)

    async with services.blobs.open(target, digest, env=env) as body:
        headers["X-Registry-Proxy-Cache"] = body.result.value
        if body.result is CacheResult.HIT:
            # Cleared for this client above; the bucket serves the bytes (storage.redirect).
            location = await services.storage.redirect_url(ContentKind.BLOB, digest)
            if location is not None:
                observer.cache_result(EndpointKind.BLOB, body.result, target.registry)
                return web.Response(status=307, headers={"Location": location, "Docker-Content-Digest": str(digest),
                                                         "Cache-Control": "no-store"})
        status, start, end = 200, 0, body.size
        wanted = _parse_range(request.headers.get("Range"), body.size)
        if wanted is not None:
            status, (start, end) = 206, wanted
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{body.size}"
        response = web.StreamResponse(status=status, headers=headers)
        if end is not None:
            response.content_length = end - start
        observer.cache_result(EndpointKind.BLOB, body.result, target.registry)
        await response.prepare(request)
        sender = BodySender(request, response)
        try:
            async for piece in body.read(start, end):
                observer.served(body.result, await sender.send(piece))
        except ConnectionError:
            # The client went away mid-body: routine for registry clients
            # that cancel a pull, and nothing to log or count as our failure.
            return response
        except (BlobStreamError, OSError) as exc:
            # Headers are gone already; a cut connection is the only honest
            # way left to tell the client this body is not the blob.
            log.warning("cut the body of %s short: %s", digest, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response


def _parse_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """One byte range as (start, end-exclusive); None serves the whole blob.

    Malformed or multi-range headers are ignored, as RFC 9110 allows.
    aiohttp's ``request.http_range`` does not fit: it reads ``bytes=-0`` as
    the whole body, where RFC 9110 makes a zero-length suffix unsatisfiable,
    and it raises on malformed headers instead of ignoring them.
    """
    if header is None or size is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:
        suffix = int(match[2])
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(int(match[2]) + 1, size) if match[2] else size


def _unsatisfiable(size: int) -> RegistryError:
    return RegistryError(ErrorCode.RANGE_INVALID, f"range not satisfiable for a blob of {size} bytes",
                         headers={"Content-Range": f"bytes */{size}"})

