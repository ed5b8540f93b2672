"""From a client's repository name to a registry and repository we may pull from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from proxy.errors import ErrorCode, RegistryError
from proxy.reference import InvalidReference, Target, resolve_name

__all__ = ["Router", "RoutingPolicy"]


@dataclass(frozen=True)
class RoutingPolicy:
    default_registry: str
    whitelist: frozenset[str] = frozenset()
    # Registry alias -> address: `proxy/<alias>/team/app` is `proxy/<address>/team/app`.
    aliases: Mapping[str, str] = field(default_factory=dict, hash=False)

    def allows(self, registry: str) -> bool:
        return not self.whitelist or registry in self.whitelist


class Router:
    def __init__(self, policy: Callable[[], RoutingPolicy]) -> None:
        # A callable: the policy changes at run time and each request takes the current one.
        self._policy = policy

    def resolve(self, name: str, ns: str | None = None) -> Target:
        policy = self._policy()
        try:
            target, from_default = resolve_name(name, ns=ns, default=policy.default_registry, aliases=policy.aliases)
        except InvalidReference as exc:
            raise RegistryError(ErrorCode.NAME_INVALID, str(exc), detail={"name": name[:300]}) from None
        if not policy.allows(target.registry):
            if from_default:
                message = (f"unprefixed name {name!r} resolves to the default registry {target.registry} "
                           "(registry.default), which is not in registry.whitelist")
            else:
                alias = name.partition("/")[0]
                named = f" (alias {alias})" if policy.aliases.get(alias) == target.registry else ""
                message = f"registry {target.registry}{named} is not in registry.whitelist"
            raise RegistryError(ErrorCode.DENIED, message, detail={"registry": target.registry})
        return target
