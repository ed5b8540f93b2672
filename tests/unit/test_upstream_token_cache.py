"""The Authenticator's token cache, with a clock the tests control: live tokens reused, expired ones swept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from proxy.upstream.auth import MIN_SWEEP, Authenticator
from proxy.upstream.challenge import Challenge
from proxy.upstream.endpoints import Credentials, Endpoint
from proxy.upstream.pools import Pools, Timeouts, open_pools

ServerFactory = Callable[..., Awaitable[TestServer]]

REGISTRY = "registry.test"
CREDS = Credentials("robot", "s3cret", id="cred:1")
LIFETIME = 100  # seconds, as the token server says; the cache trusts 90 % of it


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """Issues a fresh token per request and counts requests per scope."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.scopes.append(request.query["scope"])
        return web.json_response({"token": f"token-{len(self.scopes)}", "expires_in": LIFETIME})


class Rig:
    def __init__(self, auth: Authenticator, tokens: TokenServer, endpoint: Endpoint, clock: Clock) -> None:
        self.auth, self.tokens, self.endpoint, self.clock = auth, tokens, endpoint, clock

    async def token(self, repository: str) -> str | None:
        return await self.auth.authorization(self.endpoint, CREDS, f"repository:{repository}:pull")

    @property
    def cached(self) -> int:
        return len(self.auth._tokens)


@pytest.fixture
async def rig(aiohttp_server: ServerFactory) -> AsyncIterator[Rig]:
    tokens = TokenServer()
    app = web.Application()
    app.router.add_get("/token", tokens.handle)
    server = await aiohttp_server(app)
    pools: Pools = open_pools(Timeouts(connect=5, response=5, idle=5))
    clock = Clock()
    auth = Authenticator(pools, clock=clock)
    auth.remember(REGISTRY, [Challenge("bearer", {"realm": str(server.make_url("/token")), "service": "fake"})])
    yield Rig(auth, tokens, Endpoint(REGISTRY, str(server.make_url("")), configured=True), clock)
    await pools.close()


async def test_a_live_token_is_reused_and_an_expired_one_fetched_again(rig: Rig) -> None:
    first = await rig.token("org/app")
    rig.clock.now += LIFETIME * 0.89
    assert await rig.token("org/app") == first
    assert rig.tokens.scopes == ["repository:org/app:pull"]
    rig.clock.now += LIFETIME * 0.02  # past the 90 % the cache trusts
    assert await rig.token("org/app") not in (None, first)
    assert len(rig.tokens.scopes) == 2 and rig.cached == 1


async def test_expired_tokens_are_swept_as_new_scopes_come(rig: Rig) -> None:
    for n in range(MIN_SWEEP):
        await rig.token(f"org/app{n}")
    assert rig.cached == MIN_SWEEP
    rig.clock.now += LIFETIME  # every one of them expired
    await rig.token("org/new")
    assert rig.cached == 1
    assert rig.auth._tokens.keys() == {(REGISTRY, CREDS.id, "repository:org/new:pull")}


async def test_a_sweep_keeps_live_tokens(rig: Rig) -> None:
    for n in range(MIN_SWEEP):
        await rig.token(f"org/app{n}")
    rig.clock.now += LIFETIME / 2
    await rig.token("org/new")  # sweeps, and finds nothing expired
    assert rig.cached == MIN_SWEEP + 1
    for n in range(MIN_SWEEP):
        await rig.token(f"org/app{n}")
    assert len(rig.tokens.scopes) == MIN_SWEEP + 1  # all reused, none fetched again


async def test_the_cache_stays_bounded_under_a_stream_of_new_repositories(rig: Rig) -> None:
    # One new repository a second, tokens living 90 s: about 90 are live at any time.
    largest = 0
    for n in range(400):
        rig.clock.now += 1
        await rig.token(f"org/app{n}")
        largest = max(largest, rig.cached)
    assert len(rig.tokens.scopes) == 400
    live = int(LIFETIME * 0.9)
    assert largest <= 2 * (live + 1), largest
    assert rig.cached <= 2 * (live + 1)
