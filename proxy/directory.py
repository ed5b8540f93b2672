"""What pulls see of the durable state: a snapshot rebuilt after every committed change.

Reads on the pull path are dictionary lookups; only writes touch SQLite.
Writes are serialised, so the snapshot always matches the last commit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TypeVar

from yarl import URL

from proxy.config.settings import RegistryConfig, parse_whitelist
from proxy.credentials.minting import MintedCredentials
from proxy.credentials.providers import MintError
from proxy.credentials.providers.factory import MINTED_KINDS, build_minter
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.routing import RoutingPolicy
from proxy.reference import DOCKER_HUB, parse_address
from proxy.store.credentials import RegistryRecord, RegistryStore, in_use
from proxy.store.environments import EnvironmentRecord, EnvironmentStore
from proxy.store.pullkeys import PullKeyRecord
from proxy.store.runtime_settings import SettingsStore, SettingValue
from proxy.store.upstreams import UpstreamRecord, UpstreamStore
from proxy.upstream.endpoints import DOCKER_HUB_API, Credentials, Endpoint
from proxy.upstream.guard import is_private_host
from proxy.upstream.tls import TlsOptions

__all__ = ["Admission", "LiveState"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# How often last-used times of pull keys reach the store.
KEY_USE_FLUSH = 60.0


class Admission:
    """Which environment an anonymous client lands in, by its address.

    The most specific ``anonymous_from`` network that holds the address
    wins; an environment open to anonymous pulls from anywhere takes the
    rest (`default` before the others, then by name).
    """

    def __init__(self, environments: list[EnvironmentRecord]) -> None:
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        anywhere = []
        for env in environments:
            if not env.anonymous_pull:
                continue
            if not env.anonymous_from:
                anywhere.append(env.name)
            self._networks += [(ipaddress.ip_network(net), env.name) for net in env.anonymous_from]
        self._networks.sort(key=lambda pair: -pair[0].prefixlen)
        self._anywhere = min(anywhere, key=lambda name: (name != DEFAULT_ENVIRONMENT, name), default=None)

    def environment(self, remote: str | None) -> str | None:
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            address = None
        if address is not None:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            for network, name in self._networks:
                if address.version == network.version and address in network:
                    return name
        return self._anywhere


class LiveState:
    """Implements the upstream's RegistryDirectory and the router's policy source."""

    def __init__(self, *, registries: RegistryStore, settings: SettingsStore, upstreams: UpstreamStore,
                 environments: EnvironmentStore, configs: Mapping[str, RegistryConfig]) -> None:
        self.registries = registries
        self.environments = environments
        self.settings = settings
        self.upstreams = upstreams
        self._configs = dict(configs)
        self._lock = asyncio.Lock()
        self.records: list[RegistryRecord] = []
        self.in_use: dict[tuple[str, str], RegistryRecord] = {}
        self.envs: dict[str, EnvironmentRecord] = {}
        self.keys: dict[str, PullKeyRecord] = {}
        self.admission = Admission([])
        # Key id -> when it was last used, not yet written.
        self._key_use: dict[str, float] = {}
        self.values: dict[str, SettingValue] = {}
        self.upstream_records: dict[str, UpstreamRecord] = {}
        self._known: frozenset[str] = frozenset()
        self.policy = RoutingPolicy(DOCKER_HUB)
        self.aliases: dict[str, str] = {}
        # (alias, address) clashes already logged: every admin change reloads.
        self._alias_clashes: set[tuple[str, str]] = set()
        self.minted = MintedCredentials()

    async def reload(self) -> None:
        records = await self.registries.all()
        values = await self.settings.all()
        upstreams = {u.address: u for u in await self.upstreams.all()}
        envs = {e.name: e for e in await self.environments.all()}
        keys = {k.id: k for k in await self.environments.keys()}
        for address, config in self._configs.items():
            if config.sets_upstream:
                upstreams[address] = UpstreamRecord(address, config.endpoint, config.insecure, config.ca_cert,
                                                    config.client_cert, config.client_key, config.token_realms,
                                                    alias=config.alias, source="config")
        self.records, self.in_use, self.values = records, in_use(records), values
        self.envs, self.admission = envs, Admission(list(envs.values()))
        self.keys = {k: replace(key, last_used=self._key_use.get(k, key.last_used)) for k, key in keys.items()}
        self.minted.configure({
            f"cred:{r.id}": (r.address, build_minter(r.kind, r.address, r.password, r.options),
                             r.options.get("renew_margin"))
            # Only active ones: a deactivated credential is not used, so not renewed.
            for r in records if r.kind in MINTED_KINDS and r.active})
        self.upstream_records = upstreams
        default = values["registry.default"].value or DOCKER_HUB
        whitelist = parse_whitelist(values["registry.whitelist"].value, key="registry.whitelist")
        self.aliases = self._aliases(upstreams)
        self.policy = RoutingPolicy(parse_address(default), whitelist, self.aliases)
        self._known = frozenset(set(self._configs) | set(upstreams) | {r.address for r in records}
                                | set(whitelist) | {self.policy.default_registry})

    def _aliases(self, upstreams: Mapping[str, UpstreamRecord]) -> dict[str, str]:
        """Alias -> address. The file's aliases first: one set through the API before the file took it is left out."""
        aliases: dict[str, str] = {}
        for record in sorted(upstreams.values(), key=lambda u: u.source != "config"):
            if record.alias is None:
                continue
            owner = aliases.setdefault(record.alias, record.address)
            if owner != record.address and (record.alias, record.address) not in self._alias_clashes:
                self._alias_clashes.add((record.alias, record.address))
                log.warning("alias %s of %s (set through the API) is not used: the config file gives it to %s; "
                            "change it with `registry-proxy upstreams set %s --alias NAME`", record.alias,
                            record.address, owner, record.address)
        return aliases

    def alias_of(self, address: str) -> str | None:
        """The alias that routes to ``address``, if one does."""
        return next((alias for alias, owner in self.aliases.items() if owner == address), None)

    def note_key_use(self, key_id: str) -> None:
        """Remember that a key was just used; written to the store in batches."""
        now = time.time()
        key = self.keys.get(key_id)
        if key is not None and (key.last_used is None or now - key.last_used > 1.0):
            self.keys[key_id] = replace(key, last_used=now)
            self._key_use[key_id] = now

    async def flush_key_use(self) -> None:
        used, self._key_use = self._key_use, {}
        if used:
            try:
                await self.environments.record_use(used)
            except BaseException:
                # Newer uses since win over the ones put back.
                self._key_use = {**used, **self._key_use}
                raise

    async def run_key_use_flusher(self) -> None:
        while True:
            await asyncio.sleep(KEY_USE_FLUSH)
            try:
                await self.flush_key_use()
            except Exception as exc:  # noqa: BLE001 - a full disk, say: the times wait for the next round
                log.warning("pull key last-use times not written, kept for the next try: %s", exc)

    async def ping(self) -> None:
        await self.settings.all()

    async def change(self, write: Callable[[], Awaitable[T]]) -> T:
        """Commit one write, then refresh the snapshot before anyone sees the answer."""
        async with self._lock:
            try:
                return await write()
            finally:
                await self.reload()

    # RegistryDirectory

    def endpoint(self, registry: str) -> Endpoint:
        default = DOCKER_HUB_API if registry == DOCKER_HUB else f"https://{registry}"
        # A registry the operator named in the file or the API is configured explicitly.
        configured = (registry in self._configs or registry in self.upstream_records
                      or any(r.address == registry for r in self.records))
        upstream = self.upstream_records.get(registry)
        if upstream is None:
            return Endpoint(registry, default, configured=configured)
        tls = TlsOptions(upstream.ca_cert, upstream.client_cert, upstream.client_key)
        return Endpoint(registry, upstream.endpoint or default, configured=True, insecure=upstream.insecure, tls=tls,
                        token_realms=upstream.token_realms)

    def setting_warnings(self) -> list[str]:
        """Why the run-time settings, as they stand, make unprefixed pulls fail; said where they are set and at start."""
        policy = self.policy
        default = policy.default_registry
        warnings = []
        if not policy.allows(default):
            warnings.append(f"the default registry {default} is not in registry.whitelist: "
                            "unprefixed pulls will now fail")
        endpoint = self.endpoint(default)
        if not endpoint.configured and is_private_host(URL(endpoint.url).host or ""):
            warnings.append(f"the default registry {default} is a loopback or private address and not a configured "
                            "registry, so the SSRF guard refuses it: unprefixed pulls will now fail; configure it "
                            "under `registries:` or with `registry-proxy upstreams set`")
        return warnings

    def known_registries(self) -> frozenset[str]:
        """Registries an operator named anywhere: these keep their name in metrics."""
        return self._known

    def managed_by_config(self, address: str) -> bool:
        config = self._configs.get(address)
        return config is not None and config.sets_upstream

    def credential_id(self, environment: str, registry: str) -> str:
        record = self.in_use.get((environment, registry))
        # The edit time is part of it: an edited credential (another user,
        # say) must revalidate what the old one could see, and get new tokens.
        return "" if record is None else f"cred:{record.id}@{record.updated:.6f}"

    async def credentials(self, environment: str, registry: str) -> Credentials | None:
        record = self.in_use.get((environment, registry))
        if record is None:
            return None
        access = self.credential_id(environment, registry)
        if record.kind not in MINTED_KINDS:
            return None if record.password is None else Credentials(record.username, record.password, id=access,
                                                                    name=_named(record.id, record.username))
        try:
            minted = await self.minted.get(f"cred:{record.id}")
        except MintError as exc:
            raise RegistryError(ErrorCode.UNAUTHORIZED, f"no usable credentials for {registry}: {exc}") from None
        return Credentials(minted.username, minted.password, id=access, minted=True,
                           name=_named(record.id, minted.username))

    async def renew_credentials(self, environment: str, registry: str) -> Credentials | None:
        record = self.in_use.get((environment, registry))
        if record is None or record.kind not in MINTED_KINDS:
            return None
        try:
            minted = await self.minted.renew(f"cred:{record.id}")
        except MintError:
            return None
        if minted is None:
            return None
        return Credentials(minted.username, minted.password, id=self.credential_id(environment, registry),
                           minted=True, name=_named(record.id, minted.username))

    def credential_note(self, environment: str, registry: str) -> str | None:
        if (environment, registry) not in self.in_use and any(
                r.address == registry and r.environment == environment for r in self.records):
            return f"the credential for {registry} in environment {environment} is deactivated"
        return None


def _named(credential_id: int, username: str) -> str:
    return f"credential {credential_id} (user {username})"
