"""Read config file mappings against the declared fields, with one-line errors that name the key and the value.

Starlette's config.py style: "Config 'cache.max_size' has value 'lots'. Not a
valid size (e.g. 512MiB, 20GiB)." The fields and their parsers are declared
in proxy.config.schema and proxy.credentials; this module only walks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.credentials.schema import Field, Group, Invalid, ListOf, Member
from proxy.credentials.value_types import parse_duration

__all__ = ["SettingsError", "duration", "read_group"]


class SettingsError(ValueError):
    """A configuration problem, worded for a one-line start-up failure."""


def _read_member(key: str, value: Any, member: Member, base: Path) -> Any:
    """``value`` written at ``key`` read as ``member`` says; relative paths are taken from ``base``."""
    if isinstance(member, Group):
        return read_group(key, value, member, base)
    if isinstance(member, ListOf):
        if not isinstance(value, list):
            raise SettingsError(f"Config '{key}' has value '{value}'. Not a list of {member.name}.")
        return [read_group(f"{key}[{i}]", item, member.item, base) for i, item in enumerate(value)]
    return _read_field(key, value, member, base)


def read_group(key: str, raw: Any, group: Group, base: Path) -> dict[str, Any]:
    """The members ``raw`` sets, each read by its declaration; keys left out stay out."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"Config '{key}' has value '{raw}'. Not a mapping.")
    prefix = f"{key}." if key else ""
    if group.dotted:
        raw = _flatten(raw)
    for name in raw:
        if name not in group.names:
            raise SettingsError(f"Config '{prefix}{name}' is not a known key. Known keys here: "
                                f"{', '.join(group.names)}.")
    for field in group.fields:
        if field.required and raw.get(field.name) is None:
            raise SettingsError(f"Config '{prefix}{field.name}' is missing. {group.on_missing}")
    for first, second in group.either:
        if raw.get(first) is not None and raw.get(second) is not None:
            raise SettingsError(f"Config '{key}' sets both {first} and {second}. Keep one.")
    return {member.name: _read_member(f"{prefix}{member.name}", raw[member.name], member, base)
            for member in group.members
            if member.name in raw and not (group.null_is_unset and raw[member.name] is None)}


def duration(key: str, value: Any) -> float:
    """A duration written anywhere a config value is, e.g. a command-line flag."""
    try:
        return parse_duration(value)
    except Invalid as exc:
        raise SettingsError(f"Config '{key}' has value '{exc.quoted(value)}'. {exc}") from None


def _read_field(key: str, value: Any, field: Field, base: Path) -> Any:
    try:
        return field.type.from_file(value, base)
    except Invalid as exc:
        raise SettingsError(f"Config '{key}' has value '{exc.quoted(value)}'. {exc}") from None


def _flatten(raw: Mapping[Any, Any]) -> dict[str, Any]:
    # `registry.default: x` and `registry: {default: x}` are the same key.
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, subvalue in _flatten(value).items():
                out[f"{key}.{sub}"] = subvalue
        else:
            out[str(key)] = value
    return out
