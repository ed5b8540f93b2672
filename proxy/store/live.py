"""What pulls see of the durable state: a snapshot rebuilt after every committed change.

Reads on the pull path are dictionary lookups; only writes touch SQLite.
Writes are serialised, so the snapshot always matches the last commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from proxy.pullthrough.routing import RoutingPolicy
from proxy.reference import DOCKER_HUB, parse_address
from proxy.settings import RegistryConfig, parse_whitelist
from proxy.store.registries import RegistryRecord, RegistryStore, in_use
from proxy.store.settings import SettingsStore, SettingValue
from proxy.upstream.registries import DOCKER_HUB_API, Credentials, Endpoint

__all__ = ["LiveState"]

T = TypeVar("T")


class LiveState:
    """Implements the upstream's RegistryDirectory and the router's policy source."""

    def __init__(self, *, registries: RegistryStore, settings: SettingsStore,
                 configs: Mapping[str, RegistryConfig]) -> None:
        self.registries = registries
        self.settings = settings
        self._configs = dict(configs)
        self._lock = asyncio.Lock()
        self.records: list[RegistryRecord] = []
        self.in_use: dict[str, RegistryRecord] = {}
        self.values: dict[str, SettingValue] = {}
        self.policy = RoutingPolicy(DOCKER_HUB)

    async def reload(self) -> None:
        records = await self.registries.all()
        values = await self.settings.all()
        self.records, self.in_use, self.values = records, in_use(records), values
        default = values["registry.default"].value or DOCKER_HUB
        whitelist = parse_whitelist(values["registry.whitelist"].value, key="registry.whitelist")
        self.policy = RoutingPolicy(parse_address(default), whitelist)

    async def change(self, write: Callable[[], Awaitable[T]]) -> T:
        """Commit one write, then refresh the snapshot before anyone sees the answer."""
        async with self._lock:
            try:
                return await write()
            finally:
                await self.reload()

    # RegistryDirectory

    def endpoint(self, registry: str) -> Endpoint:
        config = self._configs.get(registry)
        default = DOCKER_HUB_API if registry == DOCKER_HUB else f"https://{registry}"
        # A registry an operator added credentials for is configured explicitly.
        configured = config is not None or any(r.address == registry for r in self.records)
        if config is None:
            return Endpoint(registry, default, configured=configured)
        return Endpoint(registry, config.endpoint or default, configured=True, insecure=config.insecure)

    def credentials(self, registry: str) -> Credentials | None:
        record = self.in_use.get(registry)
        if record is None or record.password is None:
            return None
        return Credentials(record.username, record.password, id=f"cred:{record.id}")

    def credential_note(self, registry: str) -> str | None:
        if registry not in self.in_use and any(r.address == registry for r in self.records):
            return f"the credential for {registry} is deactivated"
        return None
