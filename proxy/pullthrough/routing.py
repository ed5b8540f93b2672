"""From a client's repository name to a registry and repository we may pull from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.errors import ErrorCode, RegistryError
from proxy.reference import InvalidReference, Target, resolve_name

__all__ = ["Router", "RoutingPolicy"]


@dataclass(frozen=True)
class RoutingPolicy:
    default_registry: str
    whitelist: frozenset[str] = frozenset()

    def allows(self, registry: str) -> bool:
        return not self.whitelist or registry in self.whitelist


class Router:
    def __init__(self, policy: Callable[[], RoutingPolicy]) -> None:
        # A callable: the policy changes at run time and each request takes the current one.
        self._policy = policy

    def resolve(self, name: str, ns: str | None = None) -> Target:
        policy = self._policy()
        try:
            target, from_default = resolve_name(name, ns=ns, default=policy.default_registry)
        except InvalidReference as exc:
            raise RegistryError(ErrorCode.NAME_INVALID, str(exc), detail={"name": name[:300]}) from None
        if not policy.allows(target.registry):
            if from_default:
                message = (f"unprefixed name {name!r} resolves to the default registry {target.registry} "
                           "(registry.default), which is not in registry.whitelist")
            else:
                message = f"registry {target.registry} is not in registry.whitelist"
            raise RegistryError(ErrorCode.DENIED, message, detail={"registry": target.registry})
        return target
