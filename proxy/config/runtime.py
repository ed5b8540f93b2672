"""The run-time settings, registry.default and registry.whitelist, declared once.

The config file's `settings:` block seeds them at start and PUT
/api/v1/settings/{name} changes them while the proxy runs; both read the
value with the same type. The file's whitelist is kept normalised and
sorted; one set through the API is kept as written, once every entry is
known to be a registry address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config.values import SettingsError
from proxy.credentials.schema import Field, Group, Invalid, ValueType
from proxy.credentials.value_types import ADDRESS, text
from proxy.reference import DOCKER_HUB, InvalidReference, parse_address

__all__ = ["REGISTRY_DEFAULT", "REGISTRY_WHITELIST", "SETTINGS", "SETTING_DEFAULTS", "parse_whitelist", "setting_body",
           "whitelist"]

_STRING = {"type": "string"}


def whitelist(value: str) -> list[tuple[str, str]]:
    """Each entry of a comma-separated whitelist as written, with its registry address.

    Invalid names the first entry that is not an address, in ``shown``.
    """
    pairs = []
    for entry in (part.strip() for part in value.split(",")):
        if entry:
            try:
                pairs.append((entry, parse_address(entry)))
            except InvalidReference as exc:
                raise Invalid(str(exc), shown=entry) from None
    return pairs


def parse_whitelist(value: str, *, key: str) -> frozenset[str]:
    """The registry addresses a whitelist allows; ``key`` names it in the error."""
    try:
        return frozenset(address for _, address in whitelist(value))
    except Invalid as exc:
        raise SettingsError(f"Config '{key}' has value '{exc.shown}'. Not a registry address: {exc}.") from None


def _whitelist_from_json(value: str, name: str) -> str:
    try:
        return ", ".join(entry for entry, _ in whitelist(value))
    except Invalid as exc:
        raise Invalid(f"whitelist entry {exc.shown!r}: {exc}") from None


def _whitelist_from_file(value: Any, base: Path) -> str:
    written = text(value or "")
    try:
        return ", ".join(sorted({address for _, address in whitelist(written)}))
    except Invalid as exc:
        raise Invalid(f"Not a registry address: {exc}.", shown=exc.shown) from None


def _default_from_json(value: str, name: str) -> str:
    if not value.strip():
        raise Invalid(f"{REGISTRY_DEFAULT.name} cannot be empty: give a registry address such as docker.io or "
                      f"quay.io, or unset it (`registry-proxy settings unset {REGISTRY_DEFAULT.name}`) to go back to "
                      "the config file's value or the default")
    return str(ADDRESS.from_json(value.strip(), name))


def _default_from_file(value: Any, base: Path) -> str:
    # Empty in the file means Docker Hub, as if the key were left out.
    return DOCKER_HUB if value in (None, "") else str(ADDRESS.from_file(value, base))


REGISTRY_DEFAULT = Field("registry.default", ValueType((str,), _STRING, _STRING, from_file=_default_from_file,
                                                       from_json=_default_from_json),
                         "Registry for names without a registry prefix (ubuntu:22.04)", default=DOCKER_HUB)
REGISTRY_WHITELIST = Field("registry.whitelist", ValueType((str,), _STRING, _STRING, from_file=_whitelist_from_file,
                                                           from_json=_whitelist_from_json),
                           "Comma-separated registries that may be pulled from; empty: any public registry",
                           default="")
SETTINGS = Group("settings", "Run-time settings; the admin API can change them", (REGISTRY_DEFAULT, REGISTRY_WHITELIST),
                 dotted=True)
# Every run-time setting by name, with its value when neither the file nor the API set one.
SETTING_DEFAULTS: dict[str, str] = {field.name: field.default for field in SETTINGS.fields}


def setting_body(name: str) -> Group:
    """The body of PUT /api/v1/settings/{name}: the new value, read as the config file's would be checked."""
    setting = next(f for f in SETTINGS.fields if f.name == name)
    return Group(f"{name} change", "", (Field("value", setting.type, setting.description, required=True),))
