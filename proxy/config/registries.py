"""The `registries:` list of the config file: address, endpoint, TLS files, credentials."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config.values import (
    SettingsError,
    boolean,
    check_keys,
    duration,
    mapping,
    optional_string,
    read_secret,
    registry_address,
    string,
)
from proxy.credentials.certs import check_client_pair, parse_bundle
from proxy.credentials.kinds import CredentialInput, KindError, parse_credential

__all__ = ["RegistryConfig", "parse_registries"]

_REGISTRY_KEYS = ("address", "endpoint", "username", "password", "password_file", "email", "insecure",
                  "ca_cert", "client_cert", "client_key", "kind", "access_key_id", "secret_access_key",
                  "secret_access_key_file", "role_arn", "aws_endpoint_url", "renew_margin", "json_key_file", "mode")


@dataclass(frozen=True)
class RegistryConfig:
    address: str
    endpoint: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    email: str | None = None
    insecure: bool = False
    # PEM contents, read from the files the config names.
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    # Derived from the fields above (and the kind's own), so not part of equality.
    credential: CredentialInput | None = field(default=None, compare=False)

    @property
    def sets_upstream(self) -> bool:
        """Whether the file decides how to reach this registry (endpoint or TLS)."""
        return bool(self.endpoint or self.insecure or self.ca_cert or self.client_cert)


def parse_registries(raw: Any, base: Path) -> dict[str, RegistryConfig]:
    if not isinstance(raw, list):
        raise SettingsError(f"Config 'registries' has value '{raw}'. Not a list of registries.")
    out: dict[str, RegistryConfig] = {}
    for i, entry in enumerate(raw):
        key = f"registries[{i}]"
        entry = mapping(key, entry)
        check_keys(f"{key}.", entry, _REGISTRY_KEYS)
        if "address" not in entry:
            raise SettingsError(f"Config '{key}.address' is missing. Every registry needs an address.")
        address = registry_address(f"{key}.address", entry["address"])
        password = optional_string(f"{key}.password", entry.get("password"))
        if "password_file" in entry:
            if password is not None:
                raise SettingsError(f"Config '{key}' sets both password and password_file. Keep one.")
            password = read_secret(f"{key}.password_file", base / string(f"{key}.password_file", entry["password_file"]))
        ca_cert = _pem_file(base, f"{key}.ca_cert", entry.get("ca_cert"))
        client_cert = _pem_file(base, f"{key}.client_cert", entry.get("client_cert"))
        client_key = _pem_file(base, f"{key}.client_key", entry.get("client_key"))
        _check_tls(key, ca_cert, client_cert, client_key)
        endpoint = optional_string(f"{key}.endpoint", entry.get("endpoint"))
        if endpoint is not None:
            endpoint = _endpoint(f"{key}.endpoint", endpoint)
        credential = _credential(key, entry, address, password, base)
        # A later entry for the same address replaces the earlier one, so an
        # override can be appended without editing the original entry.
        out[address] = RegistryConfig(
            address=address,
            endpoint=endpoint,
            username=optional_string(f"{key}.username", entry.get("username")),
            password=password,
            email=optional_string(f"{key}.email", entry.get("email")),
            insecure=boolean(f"{key}.insecure", entry.get("insecure", False)),
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            credential=credential,
        )
    return out


def _endpoint(key: str, value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s?#@]+/?", value):
        raise SettingsError(f"Config '{key}' has value '{value}'. Use a URL such as https://host:port, without a path.")
    return value.rstrip("/")


def _credential(key: str, entry: Mapping[str, Any], address: str, password: str | None,
                base: Path) -> CredentialInput | None:
    kind = string(f"{key}.kind", entry.get("kind", "basic"))
    body: dict[str, Any] = {"kind": kind}
    if entry.get("email") is not None:
        body["email"] = string(f"{key}.email", entry["email"])
    if kind == "basic":
        if entry.get("username") is None and password is None:
            return None
        body.update(username=entry.get("username"), password=password)
    for name in ("access_key_id", "role_arn", "aws_endpoint_url", "mode"):
        if entry.get(name) is not None:
            body[name] = string(f"{key}.{name}", entry[name])
    if entry.get("renew_margin") is not None:
        body["renew_margin"] = duration(f"{key}.renew_margin", entry["renew_margin"])
    secret_key = optional_string(f"{key}.secret_access_key", entry.get("secret_access_key"))
    if entry.get("secret_access_key_file") is not None:
        secret_key = read_secret(f"{key}.secret_access_key_file",
                                  base / string(f"{key}.secret_access_key_file", entry["secret_access_key_file"]))
    if secret_key is not None:
        body["secret_access_key"] = secret_key
    if entry.get("json_key_file") is not None:
        body["json_key"] = read_secret(f"{key}.json_key_file", base / string(f"{key}.json_key_file",
                                                                                entry["json_key_file"]))
    try:
        return parse_credential({k: v for k, v in body.items() if v is not None}, address=address)
    except KindError as exc:
        shown = "json_key_file" if exc.field == "json_key" else exc.field
        raise SettingsError(f"Config '{key}.{shown}' is not usable: {exc}.") from None


def _pem_file(base: Path, key: str, value: Any) -> str | None:
    if value is None:
        return None
    path = base / string(key, value)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. Cannot read it: {exc}.") from None
    if key.endswith("client_key"):
        return text
    # Only the certificate blocks: a combined cert+key file must not put the
    # key where certificates are shown back (API, status page).
    try:
        return "".join(cert.pem for cert in parse_bundle(text))
    except ValueError as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. {exc}.") from None


def _check_tls(key: str, ca_cert: str | None, client_cert: str | None, client_key: str | None) -> None:
    if (client_cert is None) != (client_key is None):
        raise SettingsError(f"Config '{key}' sets only one of client_cert and client_key. Set both.")
    try:
        if ca_cert is not None:
            parse_bundle(ca_cert)
        if client_cert is not None and client_key is not None:
            check_client_pair(client_cert, client_key)
    except ValueError as exc:
        raise SettingsError(f"Config '{key}' has unusable TLS files: {exc}.") from None
