"""Admin API for the cache: /api/v1/cache/verify re-hashes everything the cache holds.

A run goes on in the background of the serving proxy (it can take as long
as reading the whole cache takes), one at a time: POST starts it and
answers 202, a second POST while it runs answers 409, and GET shows its
progress, then its result, until the next run. The result also goes to the
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from proxy.api.observer import Observer
from proxy.errors import ApiError, ApiErrorCode
from proxy.humanize import timestamp
from proxy.storage.base import Storage, VerifyReport

__all__ = ["VERIFIER", "CacheVerifier", "setup_cache_routes"]

log = logging.getLogger(__name__)


class CacheVerifier:
    """Owns the one verify run; the application's cleanup stops it before the storage closes."""

    def __init__(self, storage: Storage, observer: Observer) -> None:
        self._storage = storage
        self._observer = observer
        self._task: asyncio.Task[None] | None = None
        self.report: VerifyReport | None = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> VerifyReport:
        if self.running:
            raise ApiError(ApiErrorCode.CONFLICT, "a cache verify run is already going on; GET /api/v1/cache/verify "
                           "shows its progress")
        report = self.report = VerifyReport()
        self.error = None
        self._task = asyncio.create_task(self._run(report))
        return report

    async def _run(self, report: VerifyReport) -> None:
        try:
            await self._storage.verify(report)
        except Exception as exc:
            log.exception("cache verify failed")
            self.error = str(exc) or type(exc).__name__
        self._observer.cache_verified(report, failed=self.error is not None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def view(self) -> dict[str, Any]:
        report = self.report
        if report is None:
            return {"state": "never"}
        state = "running" if self.running else "failed" if self.error is not None else "done"
        end = report.finished
        return {"state": state, "error": self.error, "started": timestamp(report.started),
                "finished": None if end is None else timestamp(end),
                "duration_seconds": round((end if end is not None else time.time()) - report.started, 3),
                "objects": report.objects, "checked": report.checked, "bytes": report.bytes,
                "mismatched": report.mismatched, "quarantined": report.quarantined, "missing": report.missing,
                "skipped": report.skipped}


VERIFIER = web.AppKey("cache_verifier", CacheVerifier)


def setup_cache_routes(app: web.Application) -> None:
    app.router.add_post("/cache/verify", start_verify)
    app.router.add_get("/cache/verify", show_verify)


async def start_verify(request: web.Request) -> web.Response:
    verifier = request.config_dict[VERIFIER]
    verifier.start()
    return web.json_response(verifier.view(), status=202, headers={"Location": request.path})


async def show_verify(request: web.Request) -> web.Response:
    return web.json_response(request.config_dict[VERIFIER].view())
