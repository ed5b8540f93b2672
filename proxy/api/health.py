"""The endpoints Kubernetes calls: /healthz (the process answers) and /readyz (it can serve pulls)."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.api.state import LIVE, SERVICES, SETTINGS
from proxy.humanize import human_bytes
from proxy.storage.base import StorageUnavailable

__all__ = ["readiness", "setup_health_routes"]

log = logging.getLogger(__name__)


def setup_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await readiness(request.app)
    ready = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks},
                             status=200 if ready else 503)


async def readiness(app: web.Application) -> dict[str, str]:
    """Store, cache writability and free space: "ok", or what failed.

    Anyone may ask, so a failure is told in words that name no server, bucket
    or path (a database URL names its host, port, database and user); the
    detail goes to the log.
    """
    checks: dict[str, str] = {}
    try:
        await app[LIVE].ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("not ready: the state database: %s", exc)
        checks["store"] = "failed: the state database cannot be reached"
    storage = app[SERVICES].storage
    try:
        await storage.check_writable()
        checks["cache_writable"] = "ok"
    except StorageUnavailable as exc:
        log.warning("not ready: the cache's storage: %s", exc)
        checks["cache_writable"] = "failed: the cache's storage cannot be reached"
    except OSError as exc:
        log.warning("not ready: the cache cannot be written: %s", exc)
        # strerror is the bare reason ("Read-only file system"), without the path.
        checks["cache_writable"] = f"failed: {exc.strerror or 'the cache cannot be written'}"
    free = await storage.free_space()
    minimum = app[SETTINGS].cache.min_free
    checks["free_space"] = "ok" if free >= minimum else (
        f"failed: {human_bytes(free)} free, below cache.min_free ({human_bytes(minimum)})")
    return checks
