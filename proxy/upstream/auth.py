"""Answer registry challenges: Basic with stored credentials, Bearer with tokens.

Challenges are remembered per registry, so after the first 401 requests carry
credentials up front. Tokens are cached per (registry, credential, scope): a
scope names one repository, so a proxy serving many repositories keeps adding
keys. Expired tokens are therefore swept out whenever the cache has doubled
since the last sweep, which keeps it proportional to the live tokens at an
amortised O(1) per token fetched.

Stored credentials go to a token realm only where the registry's owner is
known to answer: the registry's own host and port, a well-known pair
(Docker Hub's auth.docker.io), or a realm the operator named in the
registry's ``token_realms``. Never over plain HTTP for an HTTPS registry, and
never to a private address the registry is not on. Elsewhere the token is
asked for anonymously, so public content still pulls.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from proxy.errors import ErrorCode, RegistryError
from proxy.singleflight import SingleFlight
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.challenge import Challenge
from proxy.upstream.endpoints import Credentials, Endpoint
from proxy.upstream.failures import connection_error
from proxy.upstream.guard import check_literal, is_private_host
from proxy.upstream.pools import Pools

__all__ = ["Authenticator"]

log = logging.getLogger(__name__)

DEFAULT_TOKEN_LIFETIME = 60.0
MAX_TOKEN_RESPONSE = 1024 * 1024
# Below this many cached tokens no sweep is worth its walk over the cache.
MIN_SWEEP = 64
_TokenKey = tuple[str, str, str]
# Registries whose token service lives on another host of the same owner.
# (ghcr.io and quay.io answer on their own host, so they need no entry.)
WELL_KNOWN_REALMS: dict[str, frozenset[str]] = {"docker.io": frozenset({"https://auth.docker.io:443"})}


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class Authenticator:
    def __init__(self, pools: Pools, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._pools = pools
        self._clock = clock
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[_TokenKey, _Token] = {}
        self._sweep_at = MIN_SWEEP
        self._fetches: SingleFlight[_TokenKey, _Token] = SingleFlight()

    def remember(self, registry: str, challenges: list[Challenge]) -> bool:
        """Keep the challenge we can answer; False when there is none."""
        for wanted in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == wanted and (wanted == "basic" or challenge.realm):
                    self._challenges[registry] = challenge
                    return True
        return False

    async def aclose(self) -> None:
        """Stop token requests in flight."""
        await self._fetches.aclose()

    def forget_token(self, endpoint: Endpoint, creds: Credentials | None, scope: str) -> None:
        self._tokens.pop((endpoint.registry, creds.id if creds else "", scope), None)

    async def authorization(self, endpoint: Endpoint, creds: Credentials | None, scope: str) -> str | None:
        challenge = self._challenges.get(endpoint.registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return _basic(creds) if creds else None
        key = (endpoint.registry, creds.id if creds else "", scope)
        token = self._tokens.get(key)
        if token is None or token.expires_at <= self._clock():
            token = await self._fetches.do(key, lambda: self._fetch(endpoint, challenge, creds, scope, key))
        return f"Bearer {token.value}"

    async def _fetch(self, endpoint: Endpoint, challenge: Challenge, creds: Credentials | None,
                     scope: str, key: _TokenKey) -> _Token:
        realm = URL(challenge.realm or "")
        if realm.scheme not in ("http", "https") or not realm.host:
            raise RegistryError(ErrorCode.UNKNOWN, f"{endpoint.registry} sent an unusable token realm")
        # Our own scope, never the challenge's: the remembered challenge came
        # with some earlier request and names that request's repository.
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {}
        if creds is not None:
            refusal = credentials_refusal(endpoint, realm)
            if refusal is None:
                headers["Authorization"] = _basic(creds)
            else:
                log.warning("not sending the credentials of %s to token realm %s: %s; asking anonymously (name the "
                            "realm in the registry's token_realms if it belongs to the registry)",
                            endpoint.registry, origin(realm), refusal)
        session = self._pools.for_registry(endpoint.configured)
        try:
            check_literal(realm.host, private_ok=endpoint.configured)
            async with session.get(realm.with_query(params), headers=headers, allow_redirects=False) as resp:
                status = resp.status
                body = await read_limited(resp, MAX_TOKEN_RESPONSE) if status == 200 else b""
        except BodyTooLarge:
            raise RegistryError(ErrorCode.UNKNOWN, f"token server of {endpoint.registry} sent an oversized answer") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The realm without its query: the scope is no secret, but no use in a message either.
            raise connection_error(endpoint, exc, what="token server", url=str(realm.with_query(None))) from None
        if status in (401, 403):
            who = (creds.name or f"user {creds.username!r}") if creds else "anonymous access"
            raise RegistryError(ErrorCode.UNAUTHORIZED,
                                f"token server of {endpoint.registry} refused {who}")
        if status != 200:
            raise RegistryError(ErrorCode.UNKNOWN,
                                f"token server of {endpoint.registry} answered HTTP {status}")
        try:
            data = json.loads(body)
            value = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value = None
        if not isinstance(value, str) or not value:
            raise RegistryError(ErrorCode.UNKNOWN, f"token server of {endpoint.registry} sent no token")
        # Renew a little early so a token never expires between check and use.
        token = _Token(value, self._clock() + max(lifetime * 0.9, 1.0))
        self._keep(key, token)
        return token

    def _keep(self, key: _TokenKey, token: _Token) -> None:
        if len(self._tokens) >= self._sweep_at:
            now = self._clock()
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
            self._sweep_at = max(2 * len(self._tokens), MIN_SWEEP)
        self._tokens[key] = token


def origin(url: URL) -> str:
    """scheme://host:port, the port always written (default ports made explicit), the host in lower case."""
    host = (url.host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}:{url.port}"


def credentials_refusal(endpoint: Endpoint, realm: URL) -> str | None:
    """Why the realm must not get the registry's stored credentials; None when it may."""
    registry_url = URL(endpoint.url)
    if registry_url.scheme == "https" and realm.scheme != "https":
        return "plain HTTP for an HTTPS registry"
    wanted = origin(realm)
    if wanted in {origin(URL(r)) for r in endpoint.token_realms}:
        return None
    own = {_host_port(registry_url), _host_port(URL(f"https://{endpoint.registry}"))}
    if _host_port(realm) in own:
        return None
    if is_private_host(realm.host or "") and not any(is_private_host(host) for host, _ in own):
        return "a private address the registry is not on"
    if wanted in WELL_KNOWN_REALMS.get(endpoint.registry, frozenset()):
        return None
    return "not the registry's own host and port"


def _host_port(url: URL) -> tuple[str, int | None]:
    return (url.host or "").lower(), url.port


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()
