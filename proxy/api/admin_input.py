"""Read admin API request bodies against the declared fields; every error names its field.

The fields are declared once (proxy.credentials.fields, proxy.config.connection,
proxy.config.runtime); the OpenAPI document is rendered from the same
declarations. Errors come in the order a reader fixes them: unknown or
mistyped fields in body order, then missing ones, then values in the
declared order.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.credentials.fields import ADDRESS_FIELD
from proxy.credentials.schema import FieldError, Group, Invalid
from proxy.errors import ApiError, ApiErrorCode

__all__ = ["check_address", "check_body", "read_body"]

# Large enough for a CA bundle in an upstream's ca_cert.
MAX_BODY = 1024 * 1024

_JSON_NAMES = {str: "a string", bool: "a boolean", type(None): "null", int: "a number", float: "a number",
               list: "an array", dict: "an object"}


async def read_body(request: web.Request, fields: Group) -> dict[str, Any]:
    """A JSON object of ``fields``, each value read by its type."""
    if request.content_type != "application/json":
        raise ApiError(ApiErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    body = _parse(await _read_all(request))
    if not isinstance(body, dict):
        raise ApiError(ApiErrorCode.INVALID, "body must be a JSON object")
    try:
        return check_body(body, fields)
    except FieldError as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field=exc.field) from None


async def _read_all(request: web.Request) -> bytes:
    """The whole body, to its end: one read() returns only what has arrived so far."""
    too_large = ApiError(ApiErrorCode.TOO_LARGE, f"body is larger than {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    raw = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(raw)):
        raw += chunk
        if len(raw) > MAX_BODY:
            raise too_large
    return bytes(raw)


def _parse(raw: bytes) -> Any:
    try:
        body = json.loads(raw)
        # A lone surrogate (the escape "\ud800") is valid JSON but not text: no store could hold it.
        json.dumps(body, ensure_ascii=False).encode()
    except RecursionError:
        raise ApiError(ApiErrorCode.INVALID, "body is nested too deeply to read") from None
    except UnicodeEncodeError:
        raise ApiError(ApiErrorCode.INVALID, "body holds a lone UTF-16 surrogate escape (such as \\ud800), "
                       "which is not text") from None
    except ValueError as exc:
        raise ApiError(ApiErrorCode.INVALID, f"body is not valid JSON: {exc}") from None
    return body


def check_body(body: dict[str, Any], fields: Group) -> dict[str, Any]:
    declared = {f.name: f for f in fields.fields}
    for key, value in body.items():
        field = declared.get(key)
        if field is None:
            raise FieldError(f"unknown field {key!r}; allowed: {', '.join(declared)}", key)
        expected = field.type.json_types + ((type(None),) if field.nullable else ())
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            names = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in expected))
            raise FieldError(f"{key} must be {names}, not {_json_type(value)}", key)
    for field in fields.fields:
        if field.required and field.name not in body:
            raise FieldError(f"{field.name} is required", field.name)
    checked = dict(body)
    for field in fields.fields:
        if checked.get(field.name) is not None:
            try:
                checked[field.name] = field.type.from_json(checked[field.name], field.name)
            except Invalid as exc:
                raise FieldError(str(exc), field.name) from None
    return checked


def check_address(value: str) -> str:
    """A registry address from a URL path, refused as the address field of a body would be."""
    try:
        return str(ADDRESS_FIELD.type.from_json(value, ADDRESS_FIELD.name))
    except Invalid as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field=ADDRESS_FIELD.name) from None


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)
