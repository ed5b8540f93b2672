"""The endpoints Kubernetes calls: /healthz (the process answers) and /readyz (it can serve pulls)."""

from __future__ import annotations

from aiohttp import web

from proxy.api.state import LIVE, SERVICES, SETTINGS
from proxy.humanize import human_bytes

__all__ = ["readiness", "setup_health_routes"]


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
    """Store, cache writability and free space: "ok", or what failed."""
    checks: dict[str, str] = {}
    try:
        await app[LIVE].ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready, and says why
        checks["store"] = f"failed: {exc}"
    storage = app[SERVICES].storage
    try:
        await storage.check_writable()
        checks["cache_writable"] = "ok"
    except OSError as exc:
        checks["cache_writable"] = f"failed: {exc.strerror or exc}"
    free = await storage.free_space()
    minimum = app[SETTINGS].cache.min_free
    checks["free_space"] = "ok" if free >= minimum else (
        f"failed: {human_bytes(free)} free, below cache.min_free ({human_bytes(minimum)})")
    return checks
