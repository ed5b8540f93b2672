"""Renewal policy of minted credentials, with a clock the tests control."""

from __future__ import annotations

import asyncio
import threading

import pytest
from proxy.credentials.minting import MintedCredentials
from proxy.credentials.providers import Minted, MintError
from proxy.credentials.providers.ecr import parse_ecr_address
from proxy.credentials.providers.gcr import check_gcr_address, parse_service_account_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Minter:
    def __init__(self, clock: Clock, lifetime: float | None = 3600.0) -> None:
        self.clock, self.lifetime = clock, lifetime
        self.calls = 0
        self.fail = False

    def mint(self) -> Minted:
        self.calls += 1
        if self.fail:
            raise MintError("endpoint down")
        expires = None if self.lifetime is None else self.clock.now + self.lifetime
        return Minted("AWS", f"password-{self.calls}", expires)


def manager(lifetime: float | None = 3600.0, margin: float | None = None) -> tuple[MintedCredentials, Minter, Clock]:
    clock = Clock()
    minter = Minter(clock, lifetime)
    creds = MintedCredentials(clock=clock, spread=lambda: 0.0)
    creds.configure({"k": ("registry.example", minter, margin)})
    return creds, minter, clock


async def settle() -> None:
    """Wait for the renewals running behind the pulls; returns at once when none was started.

    Nothing else runs on the test's loop, so every other task is one of them.
    """
    behind = asyncio.all_tasks() - {asyncio.current_task()}
    await asyncio.wait_for(asyncio.gather(*behind), timeout=5)


async def test_renews_in_the_last_quarter_behind_the_pull() -> None:
    creds, minter, clock = manager()
    assert (await creds.get("k")).password == "password-1"
    clock.now += 2600  # 1000 s left of 3600: not yet
    assert (await creds.get("k")).password == "password-1"
    assert minter.calls == 1
    clock.now += 200  # 800 s left: due
    assert (await creds.get("k")).password == "password-1"  # served while renewing
    await settle()
    assert minter.calls == 2
    assert (await creds.get("k")).password == "password-2"


async def test_replicas_that_minted_together_renew_spread_over_half_the_margin() -> None:
    clock = Clock()
    draws = iter([i / 50 for i in range(50)])
    replicas = [MintedCredentials(clock=clock, spread=lambda: next(draws)) for _ in range(50)]
    minters = [Minter(clock, lifetime=12 * 3600) for _ in replicas]
    for creds, minter in zip(replicas, minters, strict=True):
        creds.configure({"k": ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", minter, None)})
        await creds.get("k")
    renewals = sorted(creds.states["k"].refresh_at or 0 for creds in replicas)
    expires = clock.now + 12 * 3600
    # Within the last quarter (3 h), never later than half of it before expiry, and no two at once.
    assert renewals[0] == expires - 3 * 3600 and renewals[-1] < expires - 1.5 * 3600
    assert len(set(renewals)) == 50
    busiest = max(sum(1 for r in renewals if start <= r < start + 300) for start in renewals)
    assert busiest <= 3  # of 50 in any five minutes


async def test_margin_overrides_the_quarter() -> None:
    creds, minter, clock = manager(margin=60)
    await creds.get("k")
    clock.now += 3500
    await creds.get("k")
    await settle()
    assert minter.calls == 1
    clock.now += 50
    await creds.get("k")
    await settle()
    assert minter.calls == 2


async def test_concurrent_gets_that_find_it_due_share_one_renewal_behind_them() -> None:
    creds, minter, clock = manager()
    await creds.get("k")
    clock.now += 2800  # 800 s left of 3600: due
    results = await asyncio.gather(*(creds.get("k") for _ in range(50)))
    assert {r.password for r in results} == {"password-1"}  # none waited for the mint
    await settle()
    assert minter.calls == 2
    assert (await creds.get("k")).password == "password-2"


async def test_concurrent_gets_without_a_token_share_one_mint() -> None:
    creds, minter, _ = manager()
    results = await asyncio.gather(*(creds.get("k") for _ in range(50)))
    assert {r.password for r in results} == {"password-1"} and minter.calls == 1


async def test_failed_renewal_keeps_the_token_backs_off_then_fails_at_expiry() -> None:
    creds, minter, clock = manager(lifetime=100)
    await creds.get("k")
    minter.fail = True
    clock.now += 80
    assert (await creds.get("k")).password == "password-1"
    await settle()
    assert minter.calls == 2 and creds.states["k"].failures == 1
    clock.now += 1  # inside the 2 s backoff: no new attempt
    await creds.get("k")
    await settle()
    assert minter.calls == 2
    clock.now += 2
    await creds.get("k")
    await settle()
    assert minter.calls == 3 and creds.states["k"].last_result == "failed: endpoint down"
    clock.now += 30  # expired
    with pytest.raises(MintError):
        await creds.get("k")


async def test_a_token_without_expiry_is_reminted_after_a_minute_at_most() -> None:
    creds, minter, clock = manager(lifetime=None)
    await creds.get("k")
    clock.now += 30
    await creds.get("k")
    await settle()
    assert minter.calls == 1
    clock.now += 31
    await creds.get("k")
    await settle()
    assert minter.calls == 2


async def test_renew_after_a_401_is_rate_limited() -> None:
    creds, minter, clock = manager()
    await creds.get("k")
    assert await creds.renew("k") is None  # minted a moment ago
    clock.now += 61
    renewed = await creds.renew("k")
    assert renewed is not None and renewed.password == "password-2"


@pytest.mark.parametrize("address,account,region,fips", [
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com", "123456789012", "us-east-1", False),
    ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "123456789012", "cn-north-1", False),
    ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "123456789012", "us-gov-west-1", True),
])
def test_ecr_addresses(address: str, account: str, region: str, fips: bool) -> None:
    parsed = parse_ecr_address(address)
    assert (parsed.account, parsed.region, parsed.fips) == (account, region, fips)


@pytest.mark.parametrize("address", ["quay.io", "123.dkr.ecr.us-east-1.amazonaws.com",
                                     "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.com",
                                     "123456789012.dkr.ecr.amazonaws.com"])
def test_not_ecr_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="not an ECR registry address"):
        parse_ecr_address(address)


def test_gcr_addresses_and_keys() -> None:
    for ok in ("gcr.io", "eu.gcr.io", "europe-west1-docker.pkg.dev"):
        check_gcr_address(ok)
    for bad in ("gcr.io.evil.com", "docker.pkg.dev", "quay.io"):
        with pytest.raises(ValueError):
            check_gcr_address(bad)
    with pytest.raises(ValueError, match="has no token_uri"):
        parse_service_account_key('{"type": "service_account", "client_email": "a", "private_key": "b"}')


async def test_aclose_stops_a_renewal_in_flight_and_leaves_no_task_behind() -> None:
    creds, minter, clock = manager()
    await creds.get("k")
    entered, release = threading.Event(), threading.Event()
    mint = minter.mint

    def slow_mint() -> Minted:
        entered.set()
        release.wait(30)
        return mint()

    minter.mint = slow_mint  # type: ignore[method-assign]
    clock.now += 2800  # due: renewed behind this pull
    assert (await creds.get("k")).password == "password-1"
    assert await asyncio.to_thread(entered.wait, 5)
    try:
        # Returns while the mint still blocks its thread: the renewal's task is cancelled, not waited for.
        await asyncio.wait_for(creds.aclose(), 5)
        assert asyncio.all_tasks() == {asyncio.current_task()}
    finally:
        release.set()
