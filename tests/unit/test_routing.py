"""The router: names to targets under the current policy (default registry, whitelist, aliases)."""

from __future__ import annotations

import pytest
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.routing import Router, RoutingPolicy
from proxy.reference import Target

PORTED = "127.0.0.1:5001"


def router(whitelist: frozenset[str] = frozenset()) -> Router:
    current = RoutingPolicy(default_registry="docker.io", whitelist=whitelist, aliases={"local": PORTED})
    return Router(lambda: current)


def test_an_alias_routes_to_its_registry_and_a_one_part_name_to_the_default() -> None:
    assert router().resolve("local/team/app") == Target(PORTED, "team/app")
    assert router().resolve("local") == Target("docker.io", "library/local")


def test_a_whitelist_denial_through_an_alias_names_the_address_and_the_alias() -> None:
    with pytest.raises(RegistryError) as info:
        router(whitelist=frozenset({"docker.io"})).resolve("local/team/app")
    assert info.value.code is ErrorCode.DENIED
    assert info.value.message == f"registry {PORTED} (alias local) is not in registry.whitelist"
    assert info.value.detail == {"registry": PORTED}


def test_a_whitelist_denial_by_address_does_not_mention_the_alias() -> None:
    with pytest.raises(RegistryError) as info:
        router(whitelist=frozenset({"docker.io"})).resolve(f"{PORTED}/team/app")
    assert info.value.message == f"registry {PORTED} is not in registry.whitelist"


def test_the_aliases_of_the_policy_in_force_apply() -> None:
    policies = [RoutingPolicy("docker.io", aliases={"local": PORTED}), RoutingPolicy("docker.io")]
    switching = Router(lambda: policies[0])
    assert switching.resolve("local/app") == Target(PORTED, "app")
    policies.pop(0)
    assert switching.resolve("local/app") == Target("docker.io", "local/app")
