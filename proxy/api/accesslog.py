"""One access-log line per request, as text or JSON.

Method, path, resolved registry, environment, status, bytes, duration and
cache result. Never a header: the client's Authorization stays out. The
formatters (proxy.cli.logs) escape control characters in every field; the
text line also escapes a double quote in the path, which it quotes.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from proxy.api.metrics import REGISTRY
from proxy.api.state import IDENTITY, SENT_BY_SENDFILE

__all__ = ["AccessLogger"]


class AccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        registry = request.get(REGISTRY) or "-"
        identity = request.get(IDENTITY)
        entry = {
            "remote": request.remote or "-",
            "method": request.method,
            "path": request.path,
            "registry": registry,
            "environment": identity.environment if identity else "-",
            "key": (identity.key_id or "-") if identity else "-",
            "status": response.status,
            "bytes": response.body_length + request.get(SENT_BY_SENDFILE, 0),
            "duration_ms": round(time * 1000, 1),
            "cache": response.headers.get("X-Registry-Proxy-Cache", "-"),
        }
        # The JSON formatter (log.format: json) takes the fields from `access`.
        quoted_path = request.path.replace('"', "\\x22")
        self.logger.info('%s "%s %s" %s %s %sms registry=%s env=%s key=%s cache=%s', entry["remote"],
                         entry["method"], quoted_path, entry["status"], entry["bytes"], entry["duration_ms"],
                         entry["registry"], entry["environment"], entry["key"], entry["cache"],
                         extra={"access": entry})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
