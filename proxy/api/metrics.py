"""Counting requests, and the endpoints Prometheus and Kubernetes call: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.api.auth import require_admin
from proxy.api.observer import Observer, StateCollector
from proxy.api.state import LIVE, OBSERVER, SERVICES, SETTINGS
from proxy.humanize import human_bytes
from proxy.reference import DOCKER_HUB

__all__ = ["REGISTRY", "ENDPOINT", "observe_requests", "setup_observe_routes", "state_collector"]

# Set on the request by the /v2 handlers, read here and by the access log.
REGISTRY = "registry_proxy.registry"
ENDPOINT = "registry_proxy.endpoint"


def setup_observe_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


@web.middleware
async def observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    observer = request.config_dict[OBSERVER]
    observer.inflight.inc()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        observer.inflight.dec()
        registry = request.get(REGISTRY)
        observer.requests.labels(observer.label(registry), request.get(ENDPOINT, "base"), f"{status // 100}xx").inc()


async def metrics(request: web.Request) -> web.Response:
    if not request.config_dict[SETTINGS].metrics_public:
        require_admin(request, realm_basic=False)
    body = generate_latest(request.config_dict[OBSERVER].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    layout = app[SERVICES].store.layout
    try:
        await asyncio.to_thread(_probe_write, layout.tmp)
        checks["cache_writable"] = "ok"
    except OSError as exc:
        checks["cache_writable"] = f"failed: {exc.strerror or exc}"
    free = shutil.disk_usage(layout.root).free
    minimum = app[SETTINGS].cache.min_free
    checks["free_space"] = "ok" if free >= minimum else (
        f"failed: {human_bytes(free)} free, below cache.min_free ({human_bytes(minimum)})")
    return checks


def _probe_write(directory: os.PathLike[str]) -> None:
    with tempfile.NamedTemporaryFile(dir=directory, prefix="ready-") as f:
        f.write(b"ok")
        f.flush()


def state_collector(app: web.Application) -> StateCollector:
    """Values that live in the cache and the minting state, read at scrape time."""

    def read() -> list[Metric]:
        services, live, observer = app[SERVICES], app[LIVE], app[OBSERVER]
        store = services.store
        families: list[Metric] = [
            GaugeMetricFamily("registry_proxy_cache_size_bytes", "Bytes held in the cache", value=store.used),
            GaugeMetricFamily("registry_proxy_cache_max_size_bytes", "cache.max_size", value=store.max_size),
            CounterMetricFamily("registry_proxy_cache_evictions", "Objects evicted to stay under cache.max_size",
                                value=store.evictions),
            GaugeMetricFamily("registry_proxy_singleflight_inflight", "Upstream blob fetches in flight",
                              value=services.blobs.in_flight),
            CounterMetricFamily("registry_proxy_singleflight_joins", "Requests that joined a fetch in flight",
                                value=services.blobs.joins + services.manifests.joins),
        ]
        objects = GaugeMetricFamily("registry_proxy_cache_objects", "Objects in the cache", labels=["kind"])
        for kind in ("blob", "manifest"):
            objects.add_metric([kind], store.counts[kind])
        mints = CounterMetricFamily("registry_proxy_credential_mints", "Credential mints (ECR, GCR)",
                                    labels=["registry", "result"])
        expiry = GaugeMetricFamily("registry_proxy_credential_expiry_timestamp_seconds",
                                   "When the minted credential in use expires", labels=["registry"])
        # One sample per label: several credentials (or registries folded
        # into "other") add up; the soonest expiry is the one that matters.
        totals: dict[tuple[str, str], float] = {}
        soonest: dict[str, float] = {}
        for state in live.minted.states.values():
            label = observer.label(state.registry)
            totals[(label, "ok")] = totals.get((label, "ok"), 0) + state.mints
            totals[(label, "failed")] = totals.get((label, "failed"), 0) + state.failures_total
            if state.minted is not None and state.minted.expires_at is not None:
                soonest[label] = min(soonest.get(label, state.minted.expires_at), state.minted.expires_at)
        for (label, result), value in totals.items():
            mints.add_metric([label, result], value)
        for label, stamp in soonest.items():
            expiry.add_metric([label], stamp)
        families += [objects, mints, expiry]
        hub = observer.upstreams.get(DOCKER_HUB)
        if hub is not None and hub.ratelimit_remaining is not None:
            families.append(GaugeMetricFamily("registry_proxy_dockerhub_ratelimit_remaining",
                                              "Docker Hub pulls left in the current window",
                                              value=hub.ratelimit_remaining))
        return families

    return StateCollector(read)


def new_observer(app: web.Application) -> Observer:
    return Observer(lambda: app[LIVE].known_registries())
