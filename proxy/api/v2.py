"""The registry API's pull side: /v2/, manifests, blobs, tag lists and referrers.

Paths are parsed from the raw request target, before any decoding or
normalisation, so ``%2e%2e`` or ``foo/../bar`` cannot turn into something
else on the way to the name grammar.
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.api.blobs import serve_blob
from proxy.api.content_policy import REGISTRY_HEADERS, registry_headers
from proxy.api.metrics import ENDPOINT, REGISTRY, observe_requests
from proxy.api.pullauth import PULL_AUTH, REALM_PATH, token
from proxy.api.state import IDENTITY, OBSERVER, SERVICES
from proxy.errors import ErrorCode, RegistryError
from proxy.postgres.pool import PgUnavailable
from proxy.pullthrough.manifest_shape import OCI_INDEX
from proxy.pullthrough.ports import CacheResult
from proxy.pullthrough.referrers import FILTERS_APPLIED
from proxy.pullthrough.tags import list_tags
from proxy.reference import Digest, InvalidReference, Target, parse_digest, parse_tag
from proxy.storage.base import StorageUnavailable
from proxy.upstream.endpoints import EndpointKind

__all__ = ["registry_app", "render", "setup_token_route"]

log = logging.getLogger(__name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

_PATH = re.compile(r"/v2/(?P<name>.+?)/(?:(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)|tags/list)")
_READ_METHODS = ("GET", "HEAD")
_SCOPE_NAME = re.compile(r"[a-z0-9._/:-]{1,255}")
_PAGE_SIZE = re.compile(r"[0-9]{1,6}")
_STALE_WARNING = '110 registry-proxy "Response is Stale"'
_ENDPOINTS = {"blobs": EndpointKind.BLOB, "manifests": EndpointKind.MANIFEST, "referrers": EndpointKind.REFERRERS}


def registry_app() -> web.Application:
    """The /v2 sub-application: every answer, errors included, in the registry's shape."""
    app = web.Application(middlewares=[observe_requests, registry_errors, authenticate])
    app.on_response_prepare.append(_add_api_version)
    app.on_response_prepare.append(registry_headers)
    app.router.add_route("*", "", ping)
    app.router.add_route("*", "/", ping)
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)
    return app


def setup_token_route(app: web.Application) -> None:
    """The token realm, beside /v2 rather than under it: clients fetch tokens there before they have one."""
    app.router.add_route("GET", REALM_PATH, _token)
    app.router.add_route("POST", REALM_PATH, _token)


async def _token(request: web.Request) -> web.Response:
    try:
        response = await token(request)
    except RegistryError as err:
        response = render(request, err)
    response.headers.update(REGISTRY_HEADERS)
    return response


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
    try:
        return await handler(request)
    except RegistryError as err:
        return render(request, err)
    except web.HTTPException:
        raise
    except (StorageUnavailable, PgUnavailable) as exc:
        # Shared storage or state (storage.backend s3, state.url) that is down: the client may try again.
        log.warning("%s %s: %s", request.method, request.path, exc)
        return render(request, RegistryError(ErrorCode.UNAVAILABLE, "the proxy's cache storage or state cannot be "
                                             "reached; try again"))
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return render(request, RegistryError(ErrorCode.INTERNAL))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = _PATH.fullmatch(request.raw_path.split("?", 1)[0])
    # Only a name the challenge can quote; anything else is refused by the handler, after this.
    scope = f"repository:{match['name']}:pull" if match and _SCOPE_NAME.fullmatch(match["name"]) else None
    identity = await request.config_dict[PULL_AUTH].identify(request, ping=request.path in ("/v2", "/v2/"),
                                                             scope=scope)
    request[IDENTITY] = identity
    request.config_dict[OBSERVER].environment_request(identity.environment)
    return await handler(request)


async def _add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION[0]] = API_VERSION[1]


async def ping(request: web.Request) -> web.Response:
    _require_read(request)
    return web.json_response({})


async def dispatch(request: web.Request) -> web.StreamResponse:
    _require_read(request)
    raw_path = request.raw_path.split("?", 1)[0]
    if "%" in raw_path:
        raise RegistryError(ErrorCode.NAME_INVALID, "percent-encoded characters are not allowed in repository paths")
    match = _PATH.fullmatch(raw_path)
    if match is None:
        if raw_path.startswith("/v2/_catalog"):
            raise RegistryError(ErrorCode.UNSUPPORTED, "the catalog of a pull-through proxy is not listed")
        raise RegistryError(ErrorCode.NAME_UNKNOWN, "not a registry API path")
    services = request.config_dict[SERVICES]
    name = match["name"]
    ns = request.query.get("ns")
    request[ENDPOINT] = _ENDPOINTS.get(match["kind"] or "", EndpointKind.TAGS)
    try:
        target = services.router.resolve(name, ns)
    except RegistryError as err:
        if err.code is ErrorCode.DENIED and isinstance(err.detail, dict):
            observer = request.config_dict[OBSERVER]
            request[REGISTRY] = err.detail["registry"]
            observer.whitelist_denials.labels(observer.label(err.detail["registry"])).inc()
            observer.upstream_blocked(err.detail["registry"], "registry.whitelist", err.message)
        raise
    request[REGISTRY] = target.registry
    env = request[IDENTITY].environment
    if match["kind"] == "blobs":
        return await serve_blob(request, services, target, _digest(match["ref"]), env=env)
    if match["kind"] == "manifests":
        return await _manifest(request, target, match["ref"], env)
    if match["kind"] == "referrers":
        return await _referrers(request, target, _digest(match["ref"]), env)
    return await _tags(request, target, name, ns, env)


async def _manifest(request: web.Request, target: Target, ref: str, env: str) -> web.Response:
    services = request.config_dict[SERVICES]
    reference: str | Digest = _digest(ref) if ":" in ref else _tag(ref)
    accept = ", ".join(request.headers.getall("Accept", [])) or None
    manifest = await services.manifests.get(target, reference, env=env, accept=accept,
                                            head=request.method == "HEAD")
    observer = request.config_dict[OBSERVER]
    observer.cache_result(EndpointKind.MANIFEST, manifest.cache, target.registry)
    if manifest.body is not None:
        observer.served(manifest.cache, len(manifest.body))
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
        "X-Registry-Proxy-Cache": manifest.cache.value,
    }
    if manifest.cache is CacheResult.STALE:
        headers["Warning"] = _STALE_WARNING
    if manifest.body is None:
        headers["Content-Length"] = str(manifest.size)
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=manifest.body, headers=headers)


async def _referrers(request: web.Request, target: Target, subject: Digest, env: str) -> web.Response:
    # "artifactType=" with no value asks for no filter: no artifact has an empty type.
    artifact_type = request.query.get("artifactType") or None
    found = await request.config_dict[SERVICES].referrers.get(target, subject, env=env, artifact_type=artifact_type)
    observer = request.config_dict[OBSERVER]
    observer.cache_result(EndpointKind.REFERRERS, found.cache, target.registry)
    observer.served(found.cache, len(found.body))
    headers = {"Content-Type": OCI_INDEX, "X-Registry-Proxy-Cache": found.cache.value}
    if found.filtered:
        headers[FILTERS_APPLIED] = "artifactType"
    if found.cache is CacheResult.STALE:
        headers["Warning"] = _STALE_WARNING
    return web.Response(status=200, body=found.body, headers=headers)


async def _tags(request: web.Request, target: Target, name: str, ns: str | None, env: str) -> web.Response:
    n = request.query.get("n")
    if n is not None and not _PAGE_SIZE.fullmatch(n):
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, f"n={n[:20]!r} is not a number from 0 to 999999")
    page = await list_tags(request.config_dict[SERVICES].upstream, target, env=env, n=None if n is None else int(n),
                           last=request.query.get("last"))
    headers = {}
    if page.next_query is not None:
        # The upstream's link names its own path; clients must come back to us.
        query = {k: v for k, v in parse_qsl(page.next_query) if k in ("n", "last")}
        if ns is not None:
            query["ns"] = ns
        headers["Link"] = f'</v2/{name}/tags/list?{urlencode(query)}>; rel="next"'
    body = json.dumps({"name": name, "tags": page.tags}).encode()
    return web.Response(status=200, body=body, content_type="application/json", headers=headers)


def _require_read(request: web.Request) -> None:
    if request.method not in _READ_METHODS:
        raise RegistryError(ErrorCode.UNSUPPORTED, "registry-proxy is a read-only pull-through cache",
                            headers={"Allow": "GET, HEAD"})


def _digest(value: str) -> Digest:
    try:
        return parse_digest(value)
    except InvalidReference as exc:
        raise RegistryError(ErrorCode.DIGEST_INVALID, str(exc)) from None


def _tag(value: str) -> str:
    try:
        return parse_tag(value)
    except InvalidReference as exc:
        raise RegistryError(ErrorCode.TAG_INVALID, str(exc)) from None
