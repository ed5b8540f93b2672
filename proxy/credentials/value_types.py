"""The kinds of value credential and config fields share, with the one parser of each.

Text, booleans, durations, registry addresses, secret files: each is read
here for both the admin API and the config file, so "5m" or "yes" means the
same everywhere. File-face reasons follow "Config 'k' has value 'v'." in
starlette's style; JSON-face messages are whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from proxy.credentials.schema import Invalid, ValueType
from proxy.reference import InvalidReference, parse_address

__all__ = ["ADDRESS", "DEFAULT_ENVIRONMENT", "DURATION", "ENV_NAME", "FLAG", "SECRET_FILE", "TEXT",
 "enum_text", "parse_duration", "parse_flag", "parsed_text", "text"]

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*")
_FLAGS = ("true", "false", "yes", "no")
# A DNS label: it appears in URLs, metric labels and log lines as written.
_ENV_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

DEFAULT_ENVIRONMENT = "default"


def text(value: Any) -> str:
    """A YAML scalar as text: `port: 5000` is as good as `port: "5000"`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid("Not a string.")
    return str(value)


def parse_flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _FLAGS:
        return value.lower() in ("true", "yes")
    raise Invalid("Not a valid bool.")


def parse_duration(value: Any) -> float:
    """Seconds, from a number of them or a number with s, m, h or d."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(str(value))
    if match is None or isinstance(value, bool):
        raise Invalid("Not a valid duration (e.g. 30s, 5m, 12h, 7d).")
    return float(match[1]) * _DURATION_UNITS[match[2]]


def parsed_text(schema: Mapping[str, Any], parse: Callable[[str], str], file_reason: str) -> ValueType:
    """Text read by one of proxy.reference's parsers: its refusal is the API's message, and follows
    ``file_reason`` in a config error."""

    def from_json(value: str, name: str) -> str:
        try:
            return parse(value)
        except InvalidReference as exc:
            raise Invalid(str(exc)) from None

    def from_file(value: Any, base: Path) -> str:
        try:
            return parse(text(value))
        except InvalidReference as exc:
            raise Invalid(f"{file_reason}: {exc}.") from None

    return ValueType((str,), schema, schema, from_file=from_file, from_json=from_json)


def _env_name(value: Any) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise Invalid("Use 1 to 63 lowercase letters, digits and dashes, not starting or ending with a dash.")
    return str(value)


def _env_name_from_json(value: str, name: str) -> str:
    try:
        return _env_name(value)
    except Invalid as exc:
        raise Invalid(f"{name} {value[:70]!r} is not an environment name. {exc}") from None


def _secret_file(value: Any, base: Path) -> str:
    path = base / text(value)
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise Invalid(f"Cannot read it: {exc.strerror}.", shown=path) from None


_STRING = {"type": "string"}

TEXT = ValueType((str,), _STRING, _STRING, from_file=lambda value, base: text(value))
FLAG = ValueType((bool,), {"type": "boolean"},
                 {"type": ["boolean", "string"], "enum": [True, False, *_FLAGS]},
                 from_file=lambda value, base: parse_flag(value))
# Seconds in a JSON body; in the config file also 30s, 5m, 12h or 7d.
DURATION = ValueType((int, float), {"type": "number"},
                     {"type": ["string", "number"], "pattern": f"^{_DURATION.pattern}$", "minimum": 0},
                     from_file=lambda value, base: parse_duration(value), json_hint="in seconds",
                     file_hint="seconds, or a number with s, m, h or d (30s, 5m, 7d)")
# host[:port] as in image names; Docker Hub's aliases become docker.io.
ADDRESS = parsed_text(_STRING, parse_address, "Not a registry address")
ENV_NAME = ValueType((str,), {**_STRING, "pattern": f"^{_ENV_NAME.pattern}$"},
                     {**_STRING, "pattern": f"^{_ENV_NAME.pattern}$"},
                     from_file=lambda value, base: _env_name(text(value)), from_json=_env_name_from_json)
# The path of a file holding one secret; one trailing newline is dropped.
SECRET_FILE = ValueType((), _STRING, _STRING, from_file=_secret_file)


def enum_text(values: tuple[str, ...]) -> ValueType:
    """Text documented as one of ``values``; the rules that use it word the refusal."""
    schema = {"type": "string", "enum": list(values)}
    return ValueType((str,), schema, schema, from_file=lambda value, base: text(value))
