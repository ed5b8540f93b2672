"""Validate admin API request bodies; every error names its field."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.errors import ApiError, ApiErrorCode
from proxy.reference import InvalidReference, parse_address

__all__ = ["check_address", "check_whitelist", "read_body"]

# Large enough for a CA bundle in an upstream's ca_cert.
MAX_BODY = 1024 * 1024


async def read_body(request: web.Request, *, allowed: tuple[str, ...], required: tuple[str, ...],
                    types: dict[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys, all ``required`` present.

    Values are strings unless ``types`` says otherwise for a key.
    """
    if request.content_type != "application/json":
        raise ApiError(ApiErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(ApiErrorCode.INVALID, f"body is larger than {MAX_BODY} bytes")
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(ApiErrorCode.INVALID, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(ApiErrorCode.INVALID, "body must be a JSON object")
    for key, value in body.items():
        if key not in allowed:
            raise ApiError(ApiErrorCode.INVALID, f"unknown field {key!r}; allowed: {', '.join(allowed)}", field=key)
        expected = (types or {}).get(key, (str,))
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            names = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in expected))
            raise ApiError(ApiErrorCode.INVALID, f"{key} must be {names}, not {_json_type(value)}", field=key)
    for key in required:
        if key not in body:
            raise ApiError(ApiErrorCode.INVALID, f"{key} is required", field=key)
    return body


def check_address(value: str) -> str:
    try:
        return parse_address(value)
    except InvalidReference as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field="address") from None


def check_whitelist(value: str) -> str:
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    for entry in entries:
        try:
            parse_address(entry)
        except InvalidReference as exc:
            raise ApiError(ApiErrorCode.INVALID, f"whitelist entry {entry!r}: {exc}", field="value") from None
    return ", ".join(entries)


_JSON_NAMES = {str: "a string", bool: "a boolean", type(None): "null", int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)
