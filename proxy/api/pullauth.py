"""Who is pulling: pull keys, the proxy's token realm, and anonymous admission.

Registries authenticate clients with Docker's token scheme: a request
without credentials gets 401 and a ``Bearer realm=...`` challenge, the
client fetches a token from the realm (with its key as Basic credentials,
or none) and sends it from then on. The proxy is its own realm. ``/v2/``
always challenges a client that sent nothing, so ``docker login`` really
checks a key; other paths serve a client that sent nothing as anonymous,
where an environment admits its address. A key's secret is also accepted
as Basic on any request (containerd's `header` setting sends it so).

Wrong keys, expired or forged tokens get 401 and never fall back to
anonymous. Failed logins are limited per source address.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import math
import re
import time

from aiohttp import BasicAuth, web

from proxy.api.observer import Observer
from proxy.api.pulltokens import Identity, TokenSigner
from proxy.api.ratelimit import FailureLimiter
from proxy.api.state import IDENTITY
from proxy.directory import LiveState
from proxy.errors import ErrorCode, RegistryError
from proxy.humanize import timestamp
from proxy.store.pullkeys import PullKeyRecord, verify_secret

__all__ = ["PULL_AUTH", "REALM_PATH", "SERVICE", "PullAuth"]

REALM_PATH = "/auth/token"
SERVICE = "registry-proxy"
# scrypt takes 16 MiB a check: a burst of logins must not take the memory with it.
_CONCURRENT_HASHES = 2
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


class PullAuth:
    def __init__(self, live: LiveState, signer: TokenSigner, observer: Observer, *, external_url: str | None,
                 trusted_proxies: tuple[str, ...] = (), limiter: FailureLimiter | None = None) -> None:
        self._live = live
        self._trusted = tuple(ipaddress.ip_network(net) for net in trusted_proxies)
        self.signer = signer
        self._observer = observer
        self._external_url = external_url.rstrip("/") if external_url else None
        self._limiter = limiter or FailureLimiter()
        # Key id -> (stored hash, SHA-256 of the secret that matched it): a
        # key checks with one scrypt, and with a fast digest after that.
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._hashing = asyncio.Semaphore(_CONCURRENT_HASHES)

    async def identify(self, request: web.Request, *, ping: bool, scope: str | None) -> Identity:
        """The client's identity, or a RegistryError carrying the challenge (with ``scope``, when known)."""
        header = request.headers.get("Authorization")
        remote = self.client_address(request)
        if header is None:
            if ping:
                raise self.challenge(request, "authentication required")
            return self.anonymous(request, scope)
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            return await self.login(request, header, scope)
        if scheme.lower() == "bearer":
            identity = self.signer.verify(value.strip())
            if identity is None or not self._still_valid(identity, remote):
                self._observer.auth_failure(identity.environment if identity else None, "bad_token")
                raise self.challenge(request, "the token is not valid, or has expired", scope, error="invalid_token")
            return identity
        raise self.challenge(request, "use a pull key: docker login, or Basic credentials", scope)

    async def login(self, request: web.Request, header: str, scope: str | None = None) -> Identity:
        """The identity of a ``Basic`` pull key; refused (and counted) when it does not match."""
        remote = self.client_address(request)
        wait = self._limiter.retry_after(remote)
        if wait > 0:
            self._observer.auth_failure(None, "rate_limited")
            raise RegistryError(ErrorCode.TOOMANYREQUESTS, f"too many failed logins from {remote}",
                                headers={"Retry-After": str(math.ceil(wait))})
        try:
            given = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            given = None
        record = None if given is None else self._live.keys.get(given.login)
        if given is not None and record is not None:
            slow = not self._remembered(record)
            if slow:
                # Counted before the slow hash, so a burst of guesses cannot all
                # be hashed before the first of them is counted.
                self._limiter.failed(remote)
            if await self._matches(record, given.password):
                if slow:
                    self._limiter.forgive(remote)
                self._live.note_key_use(record.id)
                return Identity(record.environment, record.id, _version(record))
            if not slow:
                self._limiter.failed(remote)
        else:
            self._limiter.failed(remote)
        self._observer.auth_failure(record.environment if record else None,
                                    "wrong_secret" if record else "unknown_key")
        raise self.challenge(request, "incorrect pull key id or secret", scope)

    def anonymous(self, request: web.Request, scope: str | None = None) -> Identity:
        remote = self.client_address(request)
        environment = self._live.admission.environment(remote)
        if environment is None:
            self._observer.auth_failure(None, "anonymous_refused")
            raise self.challenge(request, f"anonymous pulls are not admitted from {remote}; "
                                          "log in with a pull key", scope)
        return Identity(environment)

    def client_address(self, request: web.Request) -> str:
        """The client's address: the TCP peer, or what trusted proxies in front of us say it is.

        X-Forwarded-For is read from the right, past the trusted proxies
        only: a client can write anything at its left end.
        """
        remote = request.remote or ""
        if not self._trusted or not self._is_trusted(remote):
            return remote
        hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop if _is_address(hop) else remote
        return remote

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted if ip.version == network.version)

    def challenge(self, request: web.Request, message: str, scope: str | None = None, *,
                  error: str | None = None) -> RegistryError:
        params = {"realm": self.realm(request), "service": SERVICE}
        if scope is not None:
            # Clients ask the realm for it; containerd asks twice without one.
            params["scope"] = scope
        if error is not None:
            params["error"] = error
        header = "Bearer " + ",".join(f'{k}="{v}"' for k, v in params.items())
        return RegistryError(ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": header})

    def realm(self, request: web.Request) -> str:
        """Where the client fetches tokens: the configured external URL, else the address it used."""
        if self._external_url is not None:
            return self._external_url + REALM_PATH
        host = request.headers.get("Host", "")
        if not _HOST.fullmatch(host):
            # Not a usable host: the address this connection arrived at.
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            address, port = (sock[0], sock[1]) if sock else ("127.0.0.1", 80)
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"{'https' if request.secure else 'http'}://{host}{REALM_PATH}"

    def token_answer(self, identity: Identity) -> web.Response:
        token = self.signer.issue(identity)
        now = timestamp(time.time())
        # Both names: Docker's token spec says token, OAuth2 clients read access_token.
        return web.json_response({"token": token, "access_token": token, "expires_in": self.signer.ttl,
                                  "issued_at": now})

    def _still_valid(self, identity: Identity, remote: str) -> bool:
        if identity.key_id is None:
            # An anonymous token holds only where its environment admits the client.
            return self._live.admission.environment(remote) == identity.environment
        key = self._live.keys.get(identity.key_id)
        # Revoked keys, replaced secrets and deleted environments end their tokens at once.
        return (key is not None and key.environment == identity.environment
                and identity.key_version == _version(key))

    def _remembered(self, record: PullKeyRecord) -> bool:
        known = self._verified.get(record.id)
        return known is not None and known[0] == record.hash

    async def _matches(self, record: PullKeyRecord, secret: str) -> bool:
        fast = hashlib.sha256(secret.encode()).digest()
        if self._remembered(record):
            return hmac.compare_digest(self._verified[record.id][1], fast)
        async with self._hashing:
            matches = await asyncio.to_thread(verify_secret, secret, record.hash)
        if matches:
            self._verified[record.id] = (record.hash, fast)
        return matches


PULL_AUTH = web.AppKey("pull_auth", PullAuth)


def _version(key: PullKeyRecord) -> str:
    return _version_of(key.hash)


@functools.lru_cache(maxsize=1024)
def _version_of(stored_hash: str) -> str:
    # Of the hash, which changes with the secret; says nothing about the secret.
    # Cached: every request with a token checks it.
    return hashlib.sha256(stored_hash.encode()).hexdigest()[:16]


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


async def token(request: web.Request) -> web.Response:
    """The token realm: GET with Basic credentials or none; POST as OAuth2's password grant."""
    auth = request.app[PULL_AUTH]
    header = request.headers.get("Authorization")
    if request.method == "POST":
        form = await request.post()
        if form.get("grant_type") != "password":
            raise RegistryError(ErrorCode.UNSUPPORTED, "only grant_type=password is supported")
        username, password = form.get("username"), form.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise RegistryError(ErrorCode.UNAUTHORIZED, "username and password are required")
        header = BasicAuth(username, password).encode()
    if header is None:
        identity = auth.anonymous(request)
    elif header.lower().startswith("basic "):
        identity = await auth.login(request, header)
    else:
        raise auth.challenge(request, "log in to the token realm with a pull key as Basic credentials")
    request[IDENTITY] = identity  # the access log says who logged in
    return auth.token_answer(identity)
