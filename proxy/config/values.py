"""Typed config values with one-line errors that name the key and the value.

Starlette's config.py style: "Config 'cache.max_size' has value 'lots'. Not a
valid size."
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy.reference import InvalidReference, parse_address

__all__ = ["SettingsError", "boolean", "check_keys", "duration", "file_path", "mapping", "optional_string",
           "read_secret", "registry_address", "size", "string"]

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingsError(ValueError):
    """A configuration problem, worded for a one-line start-up failure."""


def check_keys(prefix: str, raw: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            raise SettingsError(f"Config '{prefix}{key}' is not a known key. Known keys here: {', '.join(known)}.")


def mapping(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a mapping.")
    return value


def string(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a string.")
    return str(value)


def optional_string(key: str, value: Any) -> str | None:
    return None if value is None else string(key, value)


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid bool.")


def size(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match[2].lower() if match else None
    if match is None or unit not in _SIZE_UNITS or isinstance(value, bool):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid size (e.g. 512MiB, 20GiB).")
    return int(float(match[1]) * _SIZE_UNITS[unit])


def duration(key: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(value))
    if match is None or isinstance(value, bool):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid duration (e.g. 30s, 5m, 12h, 7d).")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def registry_address(key: str, value: Any) -> str:
    try:
        return parse_address(string(key, value))
    except InvalidReference as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a registry address: {exc}.") from None


def read_secret(key: str, path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"Config '{key}' has value '{path}'. Cannot read it: {exc.strerror}.") from None


def file_path(base: Path, key: str, value: Any) -> Path | None:
    return None if value is None else base / string(key, value)
