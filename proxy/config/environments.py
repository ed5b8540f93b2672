"""Environments (tenants) and their pull keys, declared once for the admin API and the config file.

An environment owns registry credentials and pull keys. Its clients
authenticate with a key, or pull anonymously where the environment admits
anonymous pulls: from anywhere, or only from ``anonymous_from`` networks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config.values import SettingsError
from proxy.credentials.schema import Field, Group, Invalid, ListOf, ValueType
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT, ENV_NAME, FLAG, SECRET_FILE, text

__all__ = ["ANONYMOUS_FROM", "ANONYMOUS_PULL", "ENVIRONMENT_BODY", "ENVIRONMENT_EDIT", "ENVIRONMENT_ENTRY", "KEY_BODY",
           "KEY_ID", "MIN_SECRET", "NETWORKS", "EnvironmentConfig", "KeyConfig", "environments_from", "parse_networks"]

# Short enough for a user name field, long enough to be unique at a glance.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")
# A key's secret is the only thing between a client and the environment's credentials.
MIN_SECRET = 16
_ARRAY = {"type": "array", "items": {"type": "string"}}


def parse_networks(value: Any) -> tuple[str, ...]:
    """Source networks (CIDR, or single addresses), normalised; raises Invalid naming the first bad one."""
    entries = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise Invalid("Not a list of networks.")
    networks = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise Invalid("Each network is a string such as 10.0.0.0/8 or 127.0.0.1.", shown=entry)
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise Invalid("Not a network (e.g. 10.0.0.0/8, fd00::/8, 127.0.0.1).", shown=entry) from None
    return tuple(dict.fromkeys(networks))


def _networks_from_json(value: Any, name: str) -> tuple[str, ...]:
    try:
        return parse_networks(value)
    except Invalid as exc:
        raise Invalid(f"{name}: {str(exc.quoted(value))[:60]!r} is not usable. {exc}") from None


def _key_id(value: Any) -> str:
    written = text(value)
    if not _KEY_ID.fullmatch(written):
        raise Invalid("Use 3 to 64 letters, digits, dots, dashes and underscores, starting with a letter or digit.")
    return written


def _key_id_from_json(value: str, name: str) -> str:
    try:
        return _key_id(value)
    except Invalid as exc:
        raise Invalid(f"{name} {value[:70]!r} is not a key id. {exc}") from None


def _key_secret_file(value: Any, base: Path) -> str:
    secret = str(SECRET_FILE.from_file(value, base))
    if len(secret) < MIN_SECRET:
        raise Invalid(f"The secret in it is shorter than {MIN_SECRET} characters.", shown=base / text(value))
    return secret


NETWORKS = ValueType((list,), _ARRAY, {"type": ["array", "string"], "items": {"type": "string"}},
                     from_file=lambda value, base: parse_networks(value), from_json=_networks_from_json,
                     file_hint="a list, or a comma-separated string")
KEY_ID = ValueType((str,), {"type": "string", "pattern": f"^{_KEY_ID.pattern}$"},
                   {"type": "string", "pattern": f"^{_KEY_ID.pattern}$"},
                   from_file=lambda value, base: _key_id(value), from_json=_key_id_from_json)

NAME = Field("name", ENV_NAME, "Environment name", required=True)
ANONYMOUS_PULL = Field("anonymous_pull", FLAG, "Whether clients without a pull key may pull (with the environment's "
                       "credentials)", default=False)
ANONYMOUS_FROM = Field("anonymous_from", NETWORKS, "Where anonymous pulls are admitted from, as networks; empty: "
                       "from anywhere, when anonymous_pull is on")
ENVIRONMENT_BODY = Group("NewEnvironment", "A tenant: its clients pull with its credentials and no one else's",
                         (NAME, ANONYMOUS_PULL, ANONYMOUS_FROM))
ENVIRONMENT_EDIT = Group("EnvironmentChange", "What an environment admits; its name cannot change",
                         (ANONYMOUS_PULL, ANONYMOUS_FROM))
KEY_BODY = Group("NewPullKey", "A pull key; the proxy makes up its id unless one is given, and always its secret",
                 (Field("id", KEY_ID, "Key id: the user name clients log in with"),))
KEY_ENTRY = Group("key", "A pull key whose secret the operator keeps in a file", (
    Field("id", KEY_ID, "Key id: the user name clients log in with", required=True),
    Field("secret_file", ValueType((), {"type": "string"}, {"type": "string"}, from_file=_key_secret_file),
          f"File holding the key's secret, at least {MIN_SECRET} characters", required=True),
), on_missing="Every key needs an id and a secret_file.")
ENVIRONMENT_ENTRY = Group("environment", "One environment (tenant) and its pull keys", (
    NAME, ANONYMOUS_PULL, ANONYMOUS_FROM, ListOf("keys", "Pull keys of this environment", KEY_ENTRY),
), null_is_unset=True, on_missing="Every environment needs a name.")


@dataclass(frozen=True)
class KeyConfig:
    id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    anonymous_pull: bool = False
    anonymous_from: tuple[str, ...] = ()
    keys: tuple[KeyConfig, ...] = ()


def environments_from(entries: list[Mapping[str, Any]]) -> dict[str, EnvironmentConfig]:
    """The file's environments by name; a name or a key id given twice is refused."""
    out: dict[str, EnvironmentConfig] = {}
    key_ids: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry["name"]
        if name in out:
            raise SettingsError(f"Config 'environments[{i}].name' has value '{name}'. It is declared twice.")
        keys = []
        for j, key in enumerate(entry.get("keys", [])):
            if key["id"] in key_ids:
                raise SettingsError(f"Config 'environments[{i}].keys[{j}].id' has value '{key['id']}'. "
                                    "Key ids are unique across environments.")
            key_ids.add(key["id"])
            keys.append(KeyConfig(key["id"], key["secret_file"]))
        default_anonymous = name == DEFAULT_ENVIRONMENT
        out[name] = EnvironmentConfig(name, entry.get("anonymous_pull", default_anonymous),
                                      entry.get("anonymous_from", ()), tuple(keys))
    return out
