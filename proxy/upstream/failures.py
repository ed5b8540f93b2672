"""Turn what went wrong upstream into the registry error the client sees.

Upstream error bodies are read back into our table's codes, and every message
names the upstream, so an operator can tell our failures from theirs.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import TypeVar

import aiohttp

from proxy.errors import ErrorCode, RegistryError
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.endpoints import Endpoint, EndpointKind
from proxy.upstream.guard import BlockedAddress
from proxy.upstream.tls import describe_tls_failure

__all__ = ["BlockedByGuard", "connection_error", "status_error"]

MAX_ERROR_BODY = 64 * 1024

E = TypeVar("E", bound=BaseException)

# A plain 404 on the referrers path is a registry without that API, not an unknown repository: oras-go
# and notation fall back to the referrers tag on any 404 but one with NAME_UNKNOWN.
_NOT_FOUND = {EndpointKind.MANIFEST: ErrorCode.MANIFEST_UNKNOWN, EndpointKind.BLOB: ErrorCode.BLOB_UNKNOWN,
              EndpointKind.REFERRERS: ErrorCode.MANIFEST_UNKNOWN}
_PASSED_THROUGH = {ErrorCode.NAME_UNKNOWN, ErrorCode.MANIFEST_UNKNOWN, ErrorCode.BLOB_UNKNOWN,
                   ErrorCode.NAME_INVALID, ErrorCode.TAG_INVALID, ErrorCode.DIGEST_INVALID}


class BlockedByGuard(RegistryError):
    """The SSRF guard kept the request from being sent: policy, not a failure of the upstream."""


def connection_error(endpoint: Endpoint, exc: BaseException, *, what: str = "registry",
                     url: str | None = None) -> RegistryError:
    """``url`` is what was called when it is not the registry's endpoint (a token realm, without its query)."""
    url = url or endpoint.url
    blocked = _find(exc, BlockedAddress)
    if blocked is not None:
        return BlockedByGuard(
            ErrorCode.DENIED,
            f"{what} {blocked.host} for {endpoint.registry} resolves to the non-public address "
            f"{blocked.address}; only registries configured under `registries:` may be reached there",
        )
    tls_error = _find(exc, ssl.SSLError)
    if tls_error is not None:
        return RegistryError(ErrorCode.UNKNOWN, describe_tls_failure(endpoint.registry, tls_error))
    wrapped = _find(exc, aiohttp.ClientSSLError)
    if wrapped is not None:
        return RegistryError(ErrorCode.UNKNOWN, f"TLS with {what} {endpoint.registry} failed: {_reason(wrapped)}")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RegistryError(ErrorCode.UNAVAILABLE, f"{what} {endpoint.registry} ({url}) timed out")
    return RegistryError(ErrorCode.UNAVAILABLE, f"{what} {endpoint.registry} ({url}) is unreachable: {_reason(exc)}")


async def status_error(endpoint: Endpoint, resp: aiohttp.ClientResponse, kind: EndpointKind, *,
                       refused: str | None = None) -> RegistryError:
    """``refused`` names the stored credential sent, for a 401: the operator must know which one to fix."""
    upstream_code, upstream_message = await _read_error(resp)
    where = f"upstream {endpoint.registry}"
    status = resp.status
    if status == 429:
        headers = {"Retry-After": resp.headers["Retry-After"]} if "Retry-After" in resp.headers else {}
        return RegistryError(ErrorCode.TOOMANYREQUESTS, f"{where} is rate limiting: {upstream_message or 'HTTP 429'}",
                             headers=headers)
    if status == 401:
        why = f"refused {refused}" if refused else "requires authentication"
        return RegistryError(ErrorCode.UNAUTHORIZED, f"{where} {why}: {upstream_message or 'HTTP 401'}")
    if status == 403:
        return RegistryError(ErrorCode.DENIED, f"{where} denied access: {upstream_message or 'HTTP 403'}")
    if status == 404:
        code = upstream_code if upstream_code in _PASSED_THROUGH else _NOT_FOUND.get(kind, ErrorCode.NAME_UNKNOWN)
        return RegistryError(code, f"{where}: {upstream_message or code.default_message}")
    if 400 <= status < 500 and upstream_code in _PASSED_THROUGH:
        return RegistryError(upstream_code, f"{where}: {upstream_message}")
    return RegistryError(ErrorCode.UNKNOWN, f"{where} answered HTTP {status}"
                         + (f": {upstream_message}" if upstream_message else ""))


async def _read_error(resp: aiohttp.ClientResponse) -> tuple[ErrorCode | None, str]:
    try:
        body = await read_limited(resp, MAX_ERROR_BODY)
        first = json.loads(body)["errors"][0]
        code = ErrorCode.from_wire(str(first.get("code", "")))
        return code, str(first.get("message") or "")[:500]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, aiohttp.ClientError, BodyTooLarge):
        return None, ""


def _find(exc: BaseException, kind: type[E]) -> E | None:
    """The innermost ``kind`` in the chain aiohttp wraps connection failures in.

    Innermost, because aiohttp's wrappers subclass the ssl errors they wrap
    without carrying their details (verify_code, reason).
    """
    found: E | None = None
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, kind):
            found = seen
        nested = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return found


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc or type(exc).__name__)
