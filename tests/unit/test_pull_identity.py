"""Who a pull is from: tokens, pull-key hashes, failed-login limits, anonymous admission, clearances."""

from __future__ import annotations

import pytest
from proxy.api.pulltokens import Identity, TokenSigner
from proxy.api.ratelimit import FailureLimiter
from proxy.directory import Admission
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.clearances import Caller, Clearances
from proxy.reference import Target
from proxy.store.environments import EnvironmentRecord
from proxy.store.pullkeys import hash_secret, verify_secret


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


KEY = b"k" * 32


def test_a_token_names_its_environment_and_key_until_it_expires() -> None:
    clock = Clock()
    signer = TokenSigner(KEY, ttl=300, clock=clock)
    token = signer.issue(Identity("team-a", "pk-1", "v1"))
    assert signer.verify(token) == Identity("team-a", "pk-1", "v1")
    anonymous = signer.issue(Identity("default"))
    assert signer.verify(anonymous) == Identity("default", None)
    clock.now += 300
    assert signer.verify(token) is None


def test_a_token_signed_with_another_key_or_altered_is_refused() -> None:
    token = TokenSigner(KEY).issue(Identity("team-a", "pk-1"))
    assert TokenSigner(b"x" * 32).verify(token) is None
    prefix, payload, signature = token.split(".")
    forged = TokenSigner(KEY).issue(Identity("team-b", "pk-1")).split(".")[1]
    assert TokenSigner(KEY).verify(f"{prefix}.{forged}.{signature}") is None
    for broken in ("", "rp1", "rp1..", f"{prefix}.{payload}.", f"xx.{payload}.{signature}", "Bearer x", "rp1.!!.x"):
        assert TokenSigner(KEY).verify(broken) is None


def test_a_secret_is_stored_as_a_salted_scrypt_hash() -> None:
    stored = hash_secret("correct horse battery")
    assert "correct horse battery" not in stored and stored.startswith("scrypt$")
    assert hash_secret("correct horse battery") != stored  # salted
    assert verify_secret("correct horse battery", stored)
    assert not verify_secret("correct horse batterz", stored)
    for damaged in ("", "scrypt$1$2", "md5$x$y$z$a$b", stored.replace("scrypt", "bcrypt")):
        assert not verify_secret("correct horse battery", damaged)


def test_failed_logins_past_the_limit_wait_out_the_window() -> None:
    clock = Clock()
    limiter = FailureLimiter(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(60)
    assert limiter.retry_after("10.0.0.2") == 0  # per address
    clock.now += 30
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30)
    clock.now += 30
    assert limiter.retry_after("10.0.0.1") == 0


def test_ipv6_clients_are_counted_by_their_slash_64() -> None:
    limiter = FailureLimiter(limit=2, window=60, clock=Clock())
    limiter.failed("2001:db8:1:2::1")
    limiter.failed("2001:db8:1:2:ffff::9")
    assert limiter.retry_after("2001:db8:1:2::77") > 0
    assert limiter.retry_after("2001:db8:1:3::1") == 0
    limiter.failed("::ffff:10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") > 0 and limiter.retry_after("10.0.0.2") == 0


def test_the_limiter_forgets_the_oldest_addresses_first() -> None:
    limiter = FailureLimiter(limit=1, window=60, clock=Clock(), remembered=2)
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("b") > 0 and limiter.retry_after("c") > 0


def env(name: str, anonymous: bool, *networks: str) -> EnvironmentRecord:
    return EnvironmentRecord(name, anonymous, networks, "api", 0.0, 0.0)


def test_the_most_specific_network_picks_an_anonymous_clients_environment() -> None:
    admission = Admission([env("default", True), env("nodes", True, "10.0.0.0/8"),
                           env("build", True, "10.1.0.0/16"), env("closed", False, "192.168.0.0/16")])
    assert admission.environment("10.1.2.3") == "build"
    assert admission.environment("10.2.0.1") == "nodes"
    assert admission.environment("::ffff:10.1.2.3") == "build"
    assert admission.environment("192.168.1.1") == "default"  # closed admits nobody; default takes the rest
    assert admission.environment("not an address") == "default"


def test_without_an_open_environment_anonymous_clients_are_refused() -> None:
    admission = Admission([env("default", False), env("nodes", True, "127.0.0.0/8", "::1/128")])
    assert admission.environment("127.0.0.1") == "nodes"
    assert admission.environment("::1") == "nodes"
    assert admission.environment("10.0.0.1") is None
    assert admission.environment(None) is None


def test_an_environment_open_to_anywhere_other_than_default_takes_the_rest() -> None:
    assert Admission([env("default", False), env("zeta", True), env("alpha", True)]).environment("1.2.3.4") == "alpha"
    assert Admission([env("default", True), env("alpha", True)]).environment("1.2.3.4") == "default"


APP = Target("registry.test", "team/app")


def test_a_clearance_holds_for_its_access_and_repository_until_the_ttl() -> None:
    clock = Clock()
    refused: list[str] = []
    clearances = Clearances(ttl=300, clock=clock, on_refused=refused.append)
    a, b = Caller("team-a", "cred:1@1.0"), Caller("team-b", "")
    clearances.record(a, APP)
    assert clearances.fresh(a, APP)
    assert clearances.fresh(Caller("team-c", "cred:1@1.0"), APP)  # the same upstream identity
    assert not clearances.fresh(b, APP)
    assert not clearances.fresh(a, Target("registry.test", "team/other"))
    clock.now += 300
    assert not clearances.fresh(a, APP)
    assert clearances.seen_within(a, APP, 600)
    clearances.check_failed(b, RegistryError(ErrorCode.UNAVAILABLE))
    assert refused == []
    clearances.check_failed(b, RegistryError(ErrorCode.UNAUTHORIZED))
    assert refused == ["team-b"]


def test_clearances_are_bounded() -> None:
    clearances = Clearances(ttl=300, clock=Clock(), remembered=2)
    callers = [Caller("e", f"cred:{i}") for i in range(3)]
    for caller in callers:
        clearances.record(caller, APP)
    assert [clearances.fresh(c, APP) for c in callers] == [False, True, True]
