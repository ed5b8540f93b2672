"""The `registries:` list of the config file: how each registry is reached, and its credential.

Each entry's keys are read by proxy.config.values against REGISTRY_ENTRY;
this module checks what only a whole entry can say: a secret given twice,
a client certificate without its key, a credential that does not fit its
kind (proxy.credentials.kinds decides, as it does for the admin API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.config.schema import REGISTRY_ENTRY
from proxy.config.values import SettingsError
from proxy.credentials.certs import check_client_pair
from proxy.credentials.fields import CREDENTIAL, SECRET_FILES
from proxy.credentials.kinds import CredentialInput, parse_credential
from proxy.credentials.schema import FieldError
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT

__all__ = ["RegistryConfig", "registries_from"]

# (environment, address): each environment has its own credential for an address.
CredentialKey = tuple[str, str]


@dataclass(frozen=True)
class RegistryConfig:
    address: str
    endpoint: str | None = None
    insecure: bool = False
    # PEM contents, read from the files the config names.
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    credential: CredentialInput | None = None
    # Origins (scheme://host:port) of token realms that may receive the credentials.
    token_realms: tuple[str, ...] = ()
    # What clients may write instead of the address as the first path component.
    alias: str | None = None

    @property
    def sets_upstream(self) -> bool:
        """Whether the file decides how to reach this registry (endpoint, TLS, token realms) and its alias."""
        return bool(self.endpoint or self.insecure or self.ca_cert or self.client_cert or self.token_realms
                    or self.alias)


def registries_from(entries: list[dict[str, Any]]) -> tuple[dict[str, RegistryConfig],
                                                             dict[CredentialKey, CredentialInput]]:
    """How to reach each address, and the credentials by (environment, address).

    A later entry for an address (and environment) replaces the earlier one,
    so an override can be appended without editing the original entry.
    """
    out: dict[str, RegistryConfig] = {}
    credentials: dict[CredentialKey, CredentialInput] = {}
    # Address -> the key of the entry that holds its settings, for naming a clash of aliases.
    keys: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key = keys[entry["address"]] = f"registries[{i}]"
        if (entry.get("client_cert") is None) != (entry.get("client_key") is None):
            raise SettingsError(f"Config '{key}' sets only one of client_cert and client_key. Set both.")
        if entry.get("client_cert") is not None:
            try:
                check_client_pair(entry["client_cert"], entry["client_key"])
            except ValueError as exc:
                raise SettingsError(f"Config '{key}' has unusable TLS files: {exc}.") from None
        credential = _credential(key, entry)
        if credential is not None:
            credentials[(credential.environment, entry["address"])] = credential
        out[entry["address"]] = RegistryConfig(
            address=entry["address"],
            endpoint=entry.get("endpoint"),
            insecure=entry.get("insecure", False),
            ca_cert=entry.get("ca_cert"),
            client_cert=entry.get("client_cert"),
            client_key=entry.get("client_key"),
            credential=credential,
            token_realms=entry.get("token_realms", ()),
            alias=entry.get("alias"),
        )
    _check_aliases(out, keys)
    return out, credentials


def _check_aliases(registries: Mapping[str, RegistryConfig], keys: Mapping[str, str]) -> None:
    owners: dict[str, str] = {}
    for address, config in registries.items():
        if config.alias is None:
            continue
        owner = owners.setdefault(config.alias, address)
        if owner != address:
            raise SettingsError(f"Config '{keys[address]}.alias' has value '{config.alias}'. {keys[owner]} "
                                f"({owner}) has it already: an alias names one registry.")


def _credential(key: str, entry: Mapping[str, Any]) -> CredentialInput | None:
    body: dict[str, Any] = {}
    for name in CREDENTIAL.names:
        secret_file = SECRET_FILES.get(name)
        if secret_file is not None and secret_file.name in entry:
            body[name] = entry[secret_file.name]
        elif name in entry and name not in ("address", "environment"):
            body[name] = entry[name]
    kind = body.setdefault("kind", "basic")
    if kind == "basic" and "username" not in body and "password" not in body:
        if "environment" in entry:
            raise SettingsError(f"Config '{key}.environment' is set, but the entry has no credential to give it.")
        return None
    body["environment"] = entry.get("environment", DEFAULT_ENVIRONMENT)
    try:
        return parse_credential(body, address=entry["address"])
    except FieldError as exc:
        # The file names some secrets only by their file (json_key_file).
        shown = exc.field if exc.field in REGISTRY_ENTRY.names else SECRET_FILES[exc.field].name
        raise SettingsError(f"Config '{key}.{shown}' is not usable: {exc}.") from None
