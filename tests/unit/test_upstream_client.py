"""UpstreamClient and its Authenticator against an in-process fake registry that counts what it is sent.

Every server here listens on 127.0.0.1; endpoints are `configured=True`, as
an operator's registries are, so the SSRF guard lets the client reach them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from proxy.errors import ErrorCode, RegistryError
from proxy.reference import Target
from proxy.upstream.auth import credentials_refusal
from proxy.upstream.breaker import Breakers
from proxy.upstream.client import UpstreamClient
from proxy.upstream.endpoints import DOCKER_HUB_API, Credentials, Endpoint, EndpointKind
from proxy.upstream.pools import Pools, Timeouts, open_pools
from proxy.upstream.tls import TlsContexts, TlsOptions
from yarl import URL

ServerFactory = Callable[..., Awaitable[TestServer]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MakeRig = Callable[..., Awaitable["Rig"]]

REGISTRY = "registry.test"
CREDS = Credentials("robot", "s3cret", id="cred:1")
BASIC = "Basic " + base64.b64encode(b"robot:s3cret").decode()
MANIFEST = b'{"schemaVersion": 2}'
DIGEST = "sha256:" + "ab" * 32
_V2 = re.compile(r"^/v2/(?P<repo>.+)/(?P<kind>manifests|blobs|tags)/(?P<rest>.+)$")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class FakeRegistry:
    """/v2 behind Bearer, Basic or no auth, a token realm, and a record of every request.

    ``answers`` replaces the default answer for one path below /v2; tokens
    are issued per scope and accepted for that scope only, as distribution does.
    """

    auth: str = "bearer"  # "bearer" | "basic" | "none"
    accepted_basic: str = BASIC  # the one Authorization a Basic registry lets in
    realm_host: str | None = None  # for the challenge; default: this server's own address
    token_refused: bool = False  # the token server answers 401 to everyone
    answers: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    token_requests: list[Seen] = field(default_factory=list)
    issued: dict[str, str] = field(default_factory=dict)  # token -> scope
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_route("*", "/v2/{tail:.*}", self._v2)
        return app

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def revoke(self) -> None:
        self.issued.clear()

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests.append(_seen(request))
        if self.token_refused:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]}, status=401)
        token = f"token-{len(self.token_requests)}"
        self.issued[token] = request.query.get("scope", "")
        return web.json_response({"token": token, "expires_in": 300})

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(_seen(request))
        match = _V2.match(request.path)
        assert match is not None, request.path
        refusal = self._refusal(request, match["repo"])
        if refusal is not None:
            return refusal
        answer = self.answers.get(request.path.removeprefix("/v2/"))
        if answer is not None:
            return await answer(request)
        return web.Response(body=MANIFEST, content_type="application/vnd.oci.image.manifest.v1+json")

    def _refusal(self, request: web.Request, repo: str) -> web.Response | None:
        given = request.headers.get("Authorization")
        if self.auth == "bearer":
            scope = f"repository:{repo}:pull"
            if given is not None and self.issued.get(given.removeprefix("Bearer ")) == scope:
                return None
            host = self.realm_host or f"127.0.0.1:{request.url.port}"
            challenge = f'Bearer realm="http://{host}/token",service="fake-registry",scope="{scope}"'
        elif self.auth == "basic":
            if given == self.accepted_basic:
                return None
            challenge = 'Basic realm="fake-registry"'
        else:
            return None
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": challenge})


def _seen(request: web.Request) -> Seen:
    return Seen(request.method, request.path, dict(request.query), dict(request.headers))


class FakeDirectory:
    """The RegistryDirectory protocol: one endpoint, fixed credentials, renewals counted."""

    def __init__(self, endpoint: Endpoint, creds: Credentials | None) -> None:
        self._endpoint = endpoint
        self._creds = creds
        self.renewals = 0

    def endpoint(self, registry: str) -> Endpoint:
        assert registry == self._endpoint.registry
        return self._endpoint

    def credential_id(self, environment: str, registry: str) -> str:
        return self._creds.id if self._creds else ""

    async def credentials(self, environment: str, registry: str) -> Credentials | None:
        return self._creds

    async def renew_credentials(self, environment: str, registry: str) -> Credentials | None:
        self.renewals += 1
        return None

    def credential_note(self, environment: str, registry: str) -> str | None:
        return None


class FakeEvents:
    """The UpstreamEvents protocol, recorded."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, int]] = []
        self.failed: list[tuple[str, str]] = []
        self.blocked: list[tuple[str, str]] = []

    def upstream_answered(self, registry: str, status: int, seconds: float, ratelimit: str | None) -> None:
        assert seconds >= 0
        self.answered.append((registry, status))

    def upstream_failed(self, registry: str, message: str, *, endpoint: str | None = None) -> None:
        self.failed.append((registry, message))

    def upstream_blocked(self, registry: str, policy: str, message: str) -> None:
        self.blocked.append((registry, policy))


@dataclass
class Rig:
    registry: FakeRegistry
    directory: FakeDirectory
    events: FakeEvents
    client: UpstreamClient

    async def get(self, repository: str, path: str, *, kind: EndpointKind = EndpointKind.MANIFEST,
                  headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        target = Target(REGISTRY, repository)
        async with self.client.open(target, "GET", path, env="default", kind=kind, headers=headers) as resp:
            return resp.status, await resp.read(), dict(resp.headers)

    async def error(self, repository: str, path: str, *, kind: EndpointKind = EndpointKind.MANIFEST) -> RegistryError:
        with pytest.raises(RegistryError) as caught:
            await self.get(repository, path, kind=kind)
        return caught.value


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    pools = open_pools(Timeouts(connect=5, response=5, idle=5))
    yield pools
    await pools.close()


@pytest.fixture
def make_rig(pools: Pools, aiohttp_server: ServerFactory, tmp_path: Path) -> MakeRig:
    async def make(registry: FakeRegistry, *, creds: Credentials | None = CREDS, ssl_context: ssl.SSLContext | None = None,
                   tls: TlsOptions | None = None, token_realms: tuple[str, ...] = ()) -> Rig:
        registry.server = await aiohttp_server(registry.app(), ssl=ssl_context)
        endpoint = Endpoint(REGISTRY, registry.url, configured=True, tls=tls or TlsOptions(), token_realms=token_realms)
        directory, events = FakeDirectory(endpoint, creds), FakeEvents()
        client = UpstreamClient(pools=pools, registries=directory, tls=TlsContexts(tmp_path / "tls"), observer=events)
        return Rig(registry, directory, events, client)

    return make


# -- challenges and tokens ---------------------------------------------------------------------------------------


async def test_a_bearer_challenge_is_answered_once_and_the_token_reused_for_its_scope(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="bearer"))
    for _ in range(3):
        status, body, _ = await rig.get("org/app", "manifests/1")
        assert (status, body) == (200, MANIFEST)
    registry = rig.registry
    [token_request] = registry.token_requests
    assert token_request.query == {"scope": "repository:org/app:pull", "service": "fake-registry"}
    assert token_request.authorization == BASIC
    # The first request met the challenge; after that the token went up front.
    assert [s.authorization for s in registry.seen] == [None, "Bearer token-1", "Bearer token-1", "Bearer token-1"]
    assert rig.events.answered == [(REGISTRY, 401)] + [(REGISTRY, 200)] * 3
    assert rig.events.failed == []


async def test_each_repository_scope_gets_its_own_token(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="bearer"))
    for repository in ("org/app", "org/other", "org/app", "org/other"):
        assert (await rig.get(repository, "manifests/1"))[0] == 200
    registry = rig.registry
    assert [r.query["scope"] for r in registry.token_requests] == ["repository:org/app:pull",
                                                                   "repository:org/other:pull"]
    # The challenge is remembered per registry, so the second repository asks
    # for its own scope's token before its first request.
    assert [(s.path.split("/")[3], s.authorization) for s in registry.seen] == [
        ("app", None), ("app", "Bearer token-1"), ("other", "Bearer token-2"),
        ("app", "Bearer token-1"), ("other", "Bearer token-2"),
    ]


async def test_a_token_the_registry_stopped_accepting_is_replaced_once(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="bearer"))
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    rig.registry.revoke()
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert len(rig.registry.token_requests) == 2
    assert [s.authorization for s in rig.registry.seen] == [None, "Bearer token-1", "Bearer token-1", "Bearer token-2"]


async def test_a_basic_challenge_gets_the_directory_credentials(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="basic"))
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert (await rig.get("org/other", "manifests/1"))[0] == 200
    # One challenge for the registry, then Basic up front, for every repository.
    assert [s.authorization for s in rig.registry.seen] == [None, BASIC, BASIC]
    assert rig.registry.token_requests == []


async def test_refused_stored_credentials_are_not_sent_again_and_again(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="basic", accepted_basic="Basic b3RoZXI6b3RoZXI="))
    error = await rig.error("org/app", "manifests/1")
    assert error.code is ErrorCode.UNAUTHORIZED and REGISTRY in error.message
    assert [s.authorization for s in rig.registry.seen] == [None, BASIC]
    assert rig.directory.renewals == 0  # stored, not minted: nothing to renew
    assert rig.events.failed and rig.events.failed[0][0] == REGISTRY


async def test_a_refused_stored_credential_is_named_by_id_and_user_never_its_password(make_rig: MakeRig) -> None:
    named = Credentials("robot", "s3cret", id="cred:7@1.0", name="credential 7 (user robot)")
    rig = await make_rig(FakeRegistry(auth="basic", accepted_basic="Basic b3RoZXI6b3RoZXI="), creds=named)
    error = await rig.error("org/app", "manifests/1")
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.message.startswith(f"upstream {REGISTRY} refused credential 7 (user robot): ")
    assert "s3cret" not in error.message
    assert rig.events.failed == [(REGISTRY, error.message)]


async def test_a_token_server_refusing_a_stored_credential_names_it(make_rig: MakeRig) -> None:
    named = Credentials("robot", "s3cret", id="cred:7@1.0", name="credential 7 (user robot)")
    rig = await make_rig(FakeRegistry(auth="bearer", token_refused=True), creds=named)
    error = await rig.error("org/app", "manifests/1")
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.message == f"token server of {REGISTRY} refused credential 7 (user robot)"
    assert rig.events.failed == [(REGISTRY, error.message)]


async def test_an_unreachable_token_server_is_named_by_its_realm(make_rig: MakeRig) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    rig = await make_rig(FakeRegistry(auth="bearer", realm_host=f"127.0.0.1:{port}"))
    error = await rig.error("org/app", "manifests/1")
    assert error.code is ErrorCode.UNAVAILABLE
    assert error.message.startswith(f"token server {REGISTRY} (http://127.0.0.1:{port}/token) is unreachable: ")
    assert "scope" not in error.message
    assert rig.events.failed == [(REGISTRY, error.message)]


async def test_upstream_requests_carry_only_what_the_directory_gives(make_rig: MakeRig) -> None:
    """The caller's headers pass; Authorization is only ever ours: a token, or the directory's Basic."""
    rig = await make_rig(FakeRegistry(auth="bearer"))
    accept = "application/vnd.oci.image.manifest.v1+json"
    for repository in ("org/app", "org/other"):
        assert (await rig.get(repository, "manifests/1", headers={"Accept": accept}))[0] == 200
    registry = rig.registry
    assert all(s.headers.get("Accept") == accept for s in registry.seen)
    assert {s.authorization for s in registry.seen} <= {None} | {f"Bearer {t}" for t in registry.issued}
    assert {s.authorization for s in registry.token_requests} == {BASIC}
    assert not any("Cookie" in s.headers for s in registry.seen + registry.token_requests)


async def test_anonymous_pulls_send_no_credentials_anywhere(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="bearer"), creds=None)
    assert (await rig.get("library/alpine", "manifests/latest"))[0] == 200
    assert [s.authorization for s in rig.registry.token_requests] == [None]
    assert [s.authorization for s in rig.registry.seen] == [None, "Bearer token-1"]


async def test_credentials_stay_away_from_a_token_realm_on_another_site(make_rig: MakeRig) -> None:
    # "localhost" is loopback too, but not the registry's site: the realm gets no password.
    registry = FakeRegistry(auth="bearer")
    rig = await make_rig(registry)
    registry.realm_host = f"localhost:{registry.server.port}"
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert [s.authorization for s in registry.token_requests] == [None]


async def test_credentials_stay_away_from_a_token_realm_on_another_port(
        make_rig: MakeRig, aiohttp_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    # Same host, other port: another service, maybe another user's, so only the anonymous token is asked for.
    registry = FakeRegistry(auth="bearer")
    rig = await make_rig(registry)
    other = await aiohttp_server(registry.app())  # the same registry's token endpoint, on a second port
    registry.realm_host = f"127.0.0.1:{other.port}"
    realm = f"http://127.0.0.1:{other.port}"
    with caplog.at_level(logging.WARNING, logger="proxy.upstream.auth"):
        assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert [s.authorization for s in registry.token_requests] == [None]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "proxy.upstream.auth"]
    assert REGISTRY in warning and realm in warning and "s3cret" not in warning and "robot" not in warning


async def test_a_token_realm_the_registry_config_names_gets_the_credentials(
        make_rig: MakeRig, aiohttp_server: ServerFactory) -> None:
    registry = FakeRegistry(auth="bearer")
    other = await aiohttp_server(registry.app())
    rig = await make_rig(registry, token_realms=(f"http://127.0.0.1:{other.port}",))
    registry.realm_host = f"127.0.0.1:{other.port}"
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert [s.authorization for s in registry.token_requests] == [BASIC]


async def test_an_http_realm_of_an_https_registry_gets_no_credentials_even_when_named(
        make_rig: MakeRig, aiohttp_server: ServerFactory) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    registry = FakeRegistry(auth="bearer")
    other = await aiohttp_server(registry.app())
    rig = await make_rig(registry, ssl_context=server_context, tls=TlsOptions(ca_cert=ca.cert_pem.bytes().decode()),
                         token_realms=(f"http://127.0.0.1:{other.port}",))
    registry.realm_host = f"127.0.0.1:{other.port}"
    assert registry.url.startswith("https://")
    assert (await rig.get("org/app", "manifests/1"))[0] == 200
    assert [s.authorization for s in registry.token_requests] == [None]


def _endpoint(registry: str, url: str | None = None, *token_realms: str) -> Endpoint:
    return Endpoint(registry, url or f"https://{registry}", configured=True, token_realms=token_realms)


@pytest.mark.parametrize(("endpoint", "realm", "reason"), [
    # A shared public suffix is not a shared owner.
    (_endpoint("myreg.azurecr.io"), "https://attacker.azurecr.io/oauth2/token", "own host and port"),
    (_endpoint("registry.example.com"), "https://auth.example.com/token", "own host and port"),
    # The registry's host, another port.
    (_endpoint("registry.example.com"), "https://registry.example.com:8443/token", "own host and port"),
    (_endpoint("registry.example.com:5000"), "https://registry.example.com/token", "own host and port"),
    # Plain HTTP for an HTTPS registry, even on its own host or named by the operator.
    (_endpoint("registry.example.com"), "http://registry.example.com/token", "plain HTTP"),
    (_endpoint("registry.example.com", None, "http://auth.example.com:80"), "http://auth.example.com/token",
     "plain HTTP"),
    (_endpoint("docker.io", DOCKER_HUB_API), "http://auth.docker.io/token", "plain HTTP"),
    # Private addresses the registry is not on.
    (_endpoint("registry.example.com"), "https://localhost/token", "private address"),
    (_endpoint("registry.example.com"), "https://127.0.0.1/token", "private address"),
    (_endpoint("registry.example.com"), "https://[::1]:443/token", "private address"),
    (_endpoint("registry.example.com"), "https://10.0.0.1/token", "private address"),
    # Docker Hub's pair is Docker Hub's alone, and on its port.
    (_endpoint("ghcr.io"), "https://auth.docker.io/token", "own host and port"),
    (_endpoint("docker.io", DOCKER_HUB_API), "https://auth.docker.io:8443/token", "own host and port"),
    # A registry on loopback: another port of its host is still another service.
    (_endpoint("127.0.0.1:5000", "http://127.0.0.1:5000"), "http://127.0.0.1:5001/token", "own host and port"),
])
def test_where_stored_credentials_do_not_go(endpoint: Endpoint, realm: str, reason: str) -> None:
    refusal = credentials_refusal(endpoint, URL(realm))
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(("endpoint", "realm"), [
    (_endpoint("registry.example.com"), "https://registry.example.com/token"),
    (_endpoint("registry.example.com"), "https://REGISTRY.example.com:443/token"),
    (_endpoint("registry.example.com:5000"), "https://registry.example.com:5000/token"),
    # Reached elsewhere: the endpoint's host and port, or the address's.
    (_endpoint("registry.example.com", "http://10.0.0.5:5000"), "http://10.0.0.5:5000/token"),
    (_endpoint("registry.example.com", "http://10.0.0.5:5000"), "https://registry.example.com/token"),
    (_endpoint("docker.io", DOCKER_HUB_API), "https://auth.docker.io/token"),
    (_endpoint("docker.io", DOCKER_HUB_API), "https://registry-1.docker.io/token"),
    (_endpoint("ghcr.io"), "https://ghcr.io/token"),
    (_endpoint("quay.io"), "https://quay.io/v2/auth"),
    # Named by the operator: scheme, host and port as named, default ports normalised.
    (_endpoint("myreg.azurecr.io", None, "https://auth.example.com:443"), "https://auth.example.com/token"),
    (_endpoint("127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5001"), "http://127.0.0.1:5001/t"),
    (_endpoint("127.0.0.1:5000", "http://127.0.0.1:5000"), "http://127.0.0.1:5000/token"),
])
def test_where_stored_credentials_may_go(endpoint: Endpoint, realm: str) -> None:
    assert credentials_refusal(endpoint, URL(realm)) is None


# -- redirects ----------------------------------------------------------------------------------------------------


async def test_redirects_are_followed_without_authorization(make_rig: MakeRig, aiohttp_server: ServerFactory) -> None:
    storage_seen: list[Seen] = []

    async def stored(request: web.Request) -> web.Response:
        storage_seen.append(_seen(request))
        return web.Response(body=b"layer bytes")

    storage_app = web.Application()
    storage_app.router.add_get("/bucket/{name}", stored)
    storage = await aiohttp_server(storage_app)

    async def to_storage(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(storage.make_url("/bucket/layer")) + "?X-Signature=abc")

    registry = FakeRegistry(auth="bearer", answers={f"org/app/blobs/{DIGEST}": to_storage})
    rig = await make_rig(registry)
    status, body, _ = await rig.get("org/app", f"blobs/{DIGEST}", kind=EndpointKind.BLOB,
                                    headers={"Accept": "*/*", "Range": "bytes=0-99", "X-Extra": "1"})
    assert (status, body) == (200, b"layer bytes")
    [hop] = storage_seen
    assert hop.query == {"X-Signature": "abc"}
    assert "Authorization" not in hop.headers and "X-Extra" not in hop.headers
    assert (hop.headers["Range"], hop.headers["Accept"]) == ("bytes=0-99", "*/*")
    assert registry.seen[-1].authorization == "Bearer token-1"


async def test_a_redirect_from_https_to_plain_http_is_refused(make_rig: MakeRig, aiohttp_server: ServerFactory) -> None:
    plain_seen: list[Seen] = []

    async def plain(request: web.Request) -> web.Response:
        plain_seen.append(_seen(request))
        return web.Response(body=b"layer bytes")

    plain_app = web.Application()
    plain_app.router.add_get("/bucket/{name}", plain)
    storage = await aiohttp_server(plain_app)

    async def downgrade(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(storage.make_url("/bucket/layer")))

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    registry = FakeRegistry(auth="none", answers={f"org/app/blobs/{DIGEST}": downgrade})
    rig = await make_rig(registry, ssl_context=server_context, tls=TlsOptions(ca_cert=ca.cert_pem.bytes().decode()))
    assert registry.url.startswith("https://127.0.0.1:")
    assert (await rig.get("org/app", "manifests/1"))[0] == 200  # the CA is trusted: HTTPS itself works

    error = await rig.error("org/app", f"blobs/{DIGEST}", kind=EndpointKind.BLOB)
    assert error.code is ErrorCode.UNKNOWN
    assert "from HTTPS to plain HTTP; refused" in error.message and REGISTRY in error.message
    assert plain_seen == []


# -- errors --------------------------------------------------------------------------------------------------------


def _answer(status: int, body: dict[str, object] | None = None, headers: dict[str, str] | None = None) -> Handler:
    async def answer(request: web.Request) -> web.Response:
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return answer


@pytest.mark.parametrize("kind,path,body,code,message", [
    (EndpointKind.MANIFEST, "manifests/missing", None, ErrorCode.MANIFEST_UNKNOWN, "manifest unknown"),
    (EndpointKind.BLOB, f"blobs/{DIGEST}", None, ErrorCode.BLOB_UNKNOWN, "blob unknown"),
    (EndpointKind.TAGS, "tags/list", None, ErrorCode.NAME_UNKNOWN, "repository name not known"),
    # The upstream's own code wins when it is one the client understands.
    (EndpointKind.MANIFEST, "manifests/missing", {"errors": [{"code": "NAME_UNKNOWN", "message": "no such repo"}]},
     ErrorCode.NAME_UNKNOWN, "no such repo"),
    (EndpointKind.BLOB, f"blobs/{DIGEST}", {"errors": [{"code": "SOMETHING_ELSE"}]}, ErrorCode.BLOB_UNKNOWN,
     "blob unknown"),
])
async def test_a_404_maps_to_the_code_for_what_was_asked(make_rig: MakeRig, kind: EndpointKind, path: str,
                                                         body: dict[str, object] | None, code: ErrorCode,
                                                         message: str) -> None:
    rig = await make_rig(FakeRegistry(auth="bearer", answers={f"org/app/{path}": _answer(404, body)}))
    error = await rig.error("org/app", path, kind=kind)
    assert (error.code, error.status) == (code, 404)
    assert f"upstream {REGISTRY}" in error.message and message in error.message
    assert rig.events.failed == []  # an unknown name is routine, not upstream trouble


async def test_429_carries_retry_after(make_rig: MakeRig) -> None:
    limited = _answer(429, {"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit reached"}]},
                      {"Retry-After": "17"})
    rig = await make_rig(FakeRegistry(auth="bearer", answers={"org/app/manifests/1": limited}))
    error = await rig.error("org/app", "manifests/1")
    assert (error.code, error.status) == (ErrorCode.TOOMANYREQUESTS, 429)
    assert error.headers == {"Retry-After": "17"}
    assert "pull rate limit reached" in error.message and REGISTRY in error.message
    assert [registry for registry, _ in rig.events.failed] == [REGISTRY]


async def test_429_without_retry_after_adds_none(make_rig: MakeRig) -> None:
    rig = await make_rig(FakeRegistry(auth="none", answers={"org/app/manifests/1": _answer(429)}))
    error = await rig.error("org/app", "manifests/1")
    assert error.code is ErrorCode.TOOMANYREQUESTS and error.headers == {}


class BlackHole:
    """Accepts TCP connections and never answers: a firewall that drops, or a wedged registry."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


async def test_a_silent_upstream_times_out_then_is_left_alone(tmp_path: Path) -> None:
    hole = BlackHole()
    url = await hole.start()
    timeouts = Timeouts(connect=5, response=0.2, idle=5)
    pools = open_pools(timeouts)
    events = FakeEvents()
    directory = FakeDirectory(Endpoint(REGISTRY, url, configured=True), None)
    client = UpstreamClient(pools=pools, registries=directory, tls=TlsContexts(tmp_path / "tls"), observer=events,
                            timeouts=timeouts, breakers=Breakers(threshold=2, cooldown=60))
    target = Target(REGISTRY, "team/app")
    try:
        for _ in range(2):
            with pytest.raises(RegistryError) as timed_out:
                async with client.open(target, "HEAD", "manifests/1", env="default", kind=EndpointKind.MANIFEST):
                    pass
            assert timed_out.value.code is ErrorCode.UNAVAILABLE and "timed out" in timed_out.value.message
        assert hole.connections == 2
        # Left alone now: answered at once, without another connection.
        with pytest.raises(RegistryError) as paused:
            async with client.open(target, "HEAD", "manifests/1", env="default", kind=EndpointKind.MANIFEST):
                pass
        assert paused.value.code is ErrorCode.UNAVAILABLE and "left alone" in paused.value.message
        assert hole.connections == 2
        assert client.breakers.open_circuits() == {REGISTRY: 2}
    finally:
        await pools.close()
        await hole.stop()
