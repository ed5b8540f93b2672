"""Requests to upstream registries, with authentication, redirects and error mapping.

Callers name a repository and a path below it; this module decides the URL,
the pool, the credentials, follows at most ``MAX_REDIRECTS`` redirects by hand
(never carrying ``Authorization`` or cookies, never downgrading to plain HTTP)
and raises ``RegistryError`` for anything but a 2xx answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from yarl import URL

from proxy.errors import ErrorCode, RegistryError
from proxy.reference import Target
from proxy.upstream.auth import Authenticator
from proxy.upstream.breaker import Breakers, CircuitOpen
from proxy.upstream.challenge import parse_challenges
from proxy.upstream.endpoints import Credentials, Endpoint, EndpointKind, RegistryDirectory, UpstreamEvents
from proxy.upstream.failures import BlockedByGuard, connection_error, status_error
from proxy.upstream.guard import check_literal
from proxy.upstream.pools import DEFAULT_TIMEOUTS, Pools, Timeouts
from proxy.upstream.tls import TlsContexts

__all__ = ["UpstreamClient"]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
PLAIN_HTTP_RECHECK = 300.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class UpstreamClient:
    def __init__(self, *, pools: Pools, registries: RegistryDirectory, tls: TlsContexts,
                 observer: UpstreamEvents, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 breakers: Breakers | None = None) -> None:
        self.registries = registries
        self.breakers = breakers or Breakers()
        self._timeouts = timeouts
        self._pools = pools
        self._tls = tls
        self._observer = observer
        self._auth = Authenticator(pools)
        # Registries marked insecure that answered on plain HTTP, until when
        # to keep going there directly.
        self._plain_http: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._auth.aclose()

    def access_key(self, environment: str, registry: str) -> str:
        """Which access the environment's requests to this registry have now: a credential id, or "" for none."""
        return self.registries.credential_id(environment, registry)

    def unresponsive(self, registry: str, message: str) -> None:
        self.breakers.failed(registry, probe=False)
        self._observer.upstream_failed(registry, message, endpoint=self.registries.endpoint(registry).url)

    @asynccontextmanager
    async def open(
        self,
        target: Target,
        method: str,
        path: str,
        *,
        env: str,
        kind: EndpointKind,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Yield the upstream's 2xx response to ``<endpoint>/v2/<repository>/<path>``, with ``env``'s credentials."""
        endpoint = self.registries.endpoint(target.registry)
        creds = await self.registries.credentials(env, target.registry)
        scope = f"repository:{target.repository}:pull"
        sent = dict(headers or {})
        resp = await self._authorized(env, endpoint, creds, scope, method, f"/v2/{target.repository}/{path}", sent,
                                      params)
        try:
            resp = await self._follow_redirects(endpoint, method, resp, sent)
            if not 200 <= resp.status < 300:
                error = await status_error(endpoint, resp, kind, refused=creds.name if creds else None)
                note = None
                if resp.status == 401:
                    note = self.registries.credential_note(env, target.registry) or (
                        f"environment {env} has no credential for {target.registry}" if creds is None else None)
                if note:
                    error.message = f"{error.message} ({note})"
                if resp.status != 404:  # unknown tags are routine, not upstream trouble
                    self._report(endpoint, error)
                raise error
            yield resp
        finally:
            resp.release()

    async def _authorized(self, env: str, endpoint: Endpoint, creds: Credentials | None, scope: str, method: str,
                          path: str, headers: dict[str, str],
                          params: Mapping[str, str] | None) -> aiohttp.ClientResponse:
        """Send, answering at most one challenge and renewing minted credentials at most once."""
        challenged = renewed = False
        while True:
            try:
                auth = await self._auth.authorization(endpoint, creds, scope)
            except RegistryError as err:
                # A token server refusing minted credentials: they may have gone stale.
                if err.code is not ErrorCode.UNAUTHORIZED or renewed or creds is None or not creds.minted:
                    self._report(endpoint, err)
                    raise
                creds, renewed = await self._renewed(env, endpoint, creds, scope), True
                if creds is None:
                    self._report(endpoint, err)
                    raise
                continue
            request_headers = dict(headers)
            if auth:
                request_headers["Authorization"] = auth
            resp = await self._send(endpoint, method, path, request_headers, params)
            if resp.status != 401:
                return resp
            if not self._auth.remember(endpoint.registry, parse_challenges(resp.headers.get("WWW-Authenticate", ""))):
                return resp
            if not challenged and (auth is None or auth.startswith("Bearer ")):
                # First contact, or a token that expired early: answer the challenge once.
                self._auth.forget_token(endpoint, creds, scope)
                challenged = True
            elif creds is not None and creds.minted and not renewed:
                renewed_creds = await self._renewed(env, endpoint, creds, scope)
                if renewed_creds is None:
                    return resp
                creds, renewed = renewed_creds, True
            else:
                # Stored credentials were refused; asking again won't help.
                return resp
            resp.release()

    async def _renewed(self, env: str, endpoint: Endpoint, creds: Credentials, scope: str) -> Credentials | None:
        self._auth.forget_token(endpoint, creds, scope)
        return await self.registries.renew_credentials(env, endpoint.registry)

    async def _send(self, endpoint: Endpoint, method: str, path: str, headers: dict[str, str],
                    params: Mapping[str, str] | None) -> aiohttp.ClientResponse:
        fallback = endpoint.plain_http_url
        on_plain = fallback is not None and self._plain_http.get(endpoint.registry, 0.0) > time.monotonic()
        # An insecure registry may answer on plain HTTP only: its HTTPS failing first is no failure yet.
        may_fall_back = fallback is not None and not on_plain
        try:
            base = fallback if fallback is not None and on_plain else endpoint.url
            return await self._request(endpoint, method, URL(base + path, encoded=True), headers, params,
                                       tls=False if on_plain else await self._registry_ssl(endpoint),
                                       report=not may_fall_back)
        except RegistryError as err:
            if fallback is None or on_plain:
                raise
            if err.code is ErrorCode.DENIED:
                self._report(endpoint, err)
                raise
            resp = await self._request(endpoint, method, URL(fallback + path, encoded=True), headers, params,
                                       tls=False)
            log.info("registry %s is insecure and answers on plain HTTP", endpoint.registry)
            # Only for a while: one failed HTTPS attempt (a timeout, say) must
            # not send credentials in clear text for the rest of the process.
            self._plain_http[endpoint.registry] = time.monotonic() + PLAIN_HTTP_RECHECK
            return resp

    async def _registry_ssl(self, endpoint: Endpoint) -> ssl.SSLContext | bool:
        return False if endpoint.insecure else await self._tls.context(endpoint.tls)

    async def _request(self, endpoint: Endpoint, method: str, url: URL, headers: Mapping[str, str],
                       params: Mapping[str, str] | None, *, tls: ssl.SSLContext | bool,
                       report: bool = True) -> aiohttp.ClientResponse:
        session = self._pools.for_registry(endpoint.configured)
        try:
            probe = self.breakers.before(endpoint.registry)
        except CircuitOpen as exc:
            raise RegistryError(ErrorCode.UNAVAILABLE, f"upstream {endpoint.registry} is left alone for now: "
                                                       f"{exc}") from None
        started = time.monotonic()
        try:
            check_literal(url.host or "", private_ok=endpoint.configured)
            # The first byte within its own deadline: the pool's read timeout
            # is for gaps in a body, and would let a silent upstream hold a
            # request for as long.
            async with asyncio.timeout(self._timeouts.response):
                resp = await session.request(method, url, headers=headers, params=params, allow_redirects=False,
                                             ssl=tls)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = connection_error(endpoint, exc)
            if error.code is ErrorCode.DENIED:
                self.breakers.released(endpoint.registry, probe=probe)  # policy, not the upstream's failure
            else:
                self.breakers.failed(endpoint.registry, probe=probe)
            if report:
                self._report(endpoint, error)
            raise error from None
        except BaseException:
            self.breakers.released(endpoint.registry, probe=probe)
            raise
        self.breakers.succeeded(endpoint.registry)
        self._observer.upstream_answered(endpoint.registry, resp.status, time.monotonic() - started,
                                         resp.headers.get("ratelimit-remaining"))
        return resp

    def _report(self, endpoint: Endpoint, error: RegistryError) -> None:
        """Tell the observer once per failed request: a refusal of the SSRF guard is policy, not the upstream."""
        if isinstance(error, BlockedByGuard):
            self._observer.upstream_blocked(endpoint.registry, "SSRF guard", error.message)
        else:
            self._observer.upstream_failed(endpoint.registry, error.message, endpoint=endpoint.url)

    def _reported(self, endpoint: Endpoint, error: RegistryError) -> RegistryError:
        self._report(endpoint, error)
        return error

    async def _follow_redirects(self, endpoint: Endpoint, method: str, resp: aiohttp.ClientResponse,
                                headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        # Storage behind a registry (S3, GCS, a CDN) authenticates with signed
        # URLs; our credentials are the registry's and must not leave it.
        hop_headers = {k: v for k, v in headers.items() if k.lower() in ("accept", "range")}
        for _ in range(MAX_REDIRECTS):
            if resp.status not in _REDIRECTS or "Location" not in resp.headers:
                return resp
            location = resp.url.join(URL(resp.headers["Location"]))
            resp.release()
            if location.scheme not in ("http", "https"):
                raise self._reported(endpoint, RegistryError(
                    ErrorCode.UNKNOWN, f"upstream {endpoint.registry} redirected to an unusable URL"))
            if resp.url.scheme == "https" and location.scheme == "http":
                raise self._reported(endpoint, RegistryError(
                    ErrorCode.UNKNOWN, f"upstream {endpoint.registry} redirected from HTTPS to plain HTTP; refused"))
            # Object storage on another host gets the system roots, not the
            # registry's private CA or client certificate.
            same_host = location.host == URL(endpoint.url).host
            resp = await self._request(endpoint, method, location, hop_headers, None,
                                       tls=await self._registry_ssl(endpoint) if same_host else True)
        if resp.status in _REDIRECTS:
            resp.release()
            raise self._reported(endpoint, RegistryError(
                ErrorCode.UNKNOWN, f"upstream {endpoint.registry} redirected more than {MAX_REDIRECTS} times"))
        return resp
