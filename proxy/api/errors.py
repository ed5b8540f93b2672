"""Render every failure of a /v2 request in the registry JSON shape."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import ErrorCode, RegistryError

__all__ = ["add_api_version", "registry_errors", "render"]

log = logging.getLogger(__name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def render(request: web.Request, err: RegistryError) -> web.Response:
    headers = dict(err.headers)
    headers["Content-Type"] = "application/json"
    body = err.body()
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(status=err.status, headers=headers)
    return web.Response(status=err.status, body=body, headers=headers)


@web.middleware
async def registry_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_registry_path(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except RegistryError as err:
        return render(request, err)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return render(request, RegistryError(ErrorCode.INTERNAL))


async def add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    if _is_registry_path(request.path):
        response.headers[API_VERSION[0]] = API_VERSION[1]


def _is_registry_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")
