"""One access-log line per request, as text or JSON.

Method, path, resolved registry, environment, status, bytes, duration and
cache result. Never a header: the client's Authorization stays out.
"""

from __future__ import annotations

import json
import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from proxy.api.observe import REGISTRY

__all__ = ["AccessLogger"]


class AccessLogger(AbstractAccessLogger):
    """``log_format`` is "json" or "text" (aiohttp hands it over as given to the runner)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        registry = request.get(REGISTRY) or "-"
        entry = {
            "remote": request.remote or "-",
            "method": request.method,
            "path": request.path,
            "registry": registry,
            "environment": "default",
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "cache": response.headers.get("X-Registry-Proxy-Cache", "-"),
        }
        if self.log_format == "json":
            self.logger.info(json.dumps(entry))
        else:
            self.logger.info('%(remote)s "%(method)s %(path)s" %(status)s %(bytes)s %(duration_ms)sms '
                             "registry=%(registry)s env=%(environment)s cache=%(cache)s", entry)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
