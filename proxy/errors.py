"""The error tables: the registry API's (/v2) and the admin API's (/api/v1).

Every error a client sees goes through this table, so a code always has the
same HTTP status and the body always has the distribution spec's shape::

    {"errors": [{"code": "...", "message": "...", "detail": ...}]}

The table::

    code                  status  when
    NAME_INVALID          400     repository name does not match the grammar
    TAG_INVALID           400     tag does not match the grammar
    PAGINATION_NUMBER_INVALID 400 tags/list n= is not a number
    DIGEST_INVALID        400     digest malformed, or content does not match it
    MANIFEST_INVALID      502     upstream manifest unusable (too large, bad digest)
    UNAUTHORIZED          401     upstream wants credentials we do not have
    DENIED                403     whitelist, SSRF guard or upstream refusal
    NAME_UNKNOWN          404     repository unknown upstream
    MANIFEST_UNKNOWN      404     manifest unknown upstream
    BLOB_UNKNOWN          404     blob unknown upstream
    UNSUPPORTED           405     push and delete: this is a read-only proxy
    RANGE_INVALID         416     Range header cannot be satisfied
    TOOMANYREQUESTS       429     upstream rate limit; Retry-After passed through
    UNKNOWN               502     upstream answered with something we cannot use
    UNAVAILABLE           503     upstream could not be reached
    UNKNOWN (INTERNAL)    500     a bug of ours; logged with its traceback
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["ApiError", "ApiErrorCode", "ErrorCode", "RegistryError", "error_body"]


class ErrorCode(enum.Enum):
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    TAG_INVALID = ("TAG_INVALID", 400, "manifest tag did not match URI")
    PAGINATION_NUMBER_INVALID = ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_INVALID = ("MANIFEST_INVALID", 502, "manifest invalid")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown")
    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    RANGE_INVALID = ("RANGE_INVALID", 416, "invalid content range")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    UNKNOWN = ("UNKNOWN", 502, "unknown error")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")
    INTERNAL = ("UNKNOWN", 500, "internal error")

    def __init__(self, wire: str, status: int, message: str) -> None:
        self.wire = wire
        self.status = status
        self.default_message = message

    @classmethod
    def from_wire(cls, wire: str) -> ErrorCode | None:
        return _BY_WIRE.get(wire)


_BY_WIRE: dict[str, ErrorCode] = {}
for _code in ErrorCode:
    _BY_WIRE.setdefault(_code.wire, _code)


class RegistryError(Exception):
    """An error to report to the client in the registry JSON shape."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{code.wire}: {self.message}")

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.detail)


def error_body(code: ErrorCode, message: str, detail: Any = None) -> bytes:
    entry = {"code": code.wire, "message": message, "detail": detail}
    return json.dumps({"errors": [entry]}).encode()


class ApiErrorCode(enum.Enum):
    """The admin API's error table: ``{"error": {"code", "message", "field"}}``."""

    INVALID = ("invalid", 400)
    UNAUTHORIZED = ("unauthorized", 401)
    NOT_FOUND = ("not_found", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    CONFLICT = ("conflict", 409)
    TOO_LARGE = ("too_large", 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    INTERNAL = ("internal", 500)
    UPSTREAM_FAILED = ("upstream_failed", 502)
    UNAVAILABLE = ("unavailable", 503)
    INSUFFICIENT_STORAGE = ("insufficient_storage", 507)

    def __init__(self, wire: str, status: int) -> None:
        self.wire = wire
        self.status = status


class ApiError(Exception):
    def __init__(self, code: ApiErrorCode, message: str, *, field: str | None = None) -> None:
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)

    def body(self) -> bytes:
        return json.dumps({"error": {"code": self.code.wire, "message": self.message, "field": self.field}}).encode()
