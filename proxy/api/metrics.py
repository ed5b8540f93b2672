"""Counting requests, and the endpoint Prometheus scrapes: /metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.api.auth import require_admin
from proxy.api.content_policy import NOSNIFF
from proxy.api.observer import Observer, StateCollector
from proxy.api.state import LIVE, OBSERVER, SERVICES, SETTINGS
from proxy.reference import DOCKER_HUB
from proxy.upstream.endpoints import EndpointKind

__all__ = ["ENDPOINT", "REGISTRY", "new_observer", "observe_requests", "setup_metrics_routes", "state_collector"]

# Set on the request by the /v2 handlers, read here and by the access log.
REGISTRY = web.RequestKey("registry", str)
ENDPOINT = web.RequestKey("endpoint", EndpointKind)


def setup_metrics_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)


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
    except asyncio.CancelledError:
        # The client hung up before the answer was done: counted as nginx
        # does (499), not as a failure of ours.
        status = 499
        raise
    finally:
        observer.inflight.dec()
        endpoint = request.get(ENDPOINT, EndpointKind.BASE)
        observer.requests.labels(observer.label(request.get(REGISTRY)), endpoint.value, f"{status // 100}xx").inc()


async def metrics(request: web.Request) -> web.Response:
    if not request.config_dict[SETTINGS].metrics_public:
        require_admin(request, realm_basic=False)
    body = generate_latest(request.config_dict[OBSERVER].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, **NOSNIFF})


def state_collector(app: web.Application) -> StateCollector:
    """Values that live in the cache and the minting state, read at scrape time."""

    def read() -> list[Metric]:
        services, live, observer = app[SERVICES], app[LIVE], app[OBSERVER]
        stats = services.storage.stats()
        families: list[Metric] = [
            GaugeMetricFamily("registry_proxy_cache_size_bytes", "Bytes held in the cache", value=stats.used),
            GaugeMetricFamily("registry_proxy_cache_max_size_bytes", "cache.max_size", value=stats.max_size),
            CounterMetricFamily("registry_proxy_cache_evictions", "Objects evicted to stay under cache.max_size",
                                value=stats.evictions),
            GaugeMetricFamily("registry_proxy_singleflight_inflight", "Upstream blob fetches in flight",
                              value=services.blobs.in_flight),
            CounterMetricFamily("registry_proxy_singleflight_joins", "Requests that joined a fetch in flight",
                                value=services.blobs.joins + services.manifests.joins
                                + services.referrers.joins),
            GaugeMetricFamily("registry_proxy_cache_reserved_bytes", "Bytes reserved under cache.max_size by "
                              "downloads in flight", value=stats.reserved),
            CounterMetricFamily("registry_proxy_uncached_blobs", "Blob downloads streamed without caching: the "
                                "disk was full or the blob did not fit", value=services.blobs.uncached),
        ]
        disk_full = CounterMetricFamily("registry_proxy_disk_full", "Writes that found the disk full: cache "
                                        "content and links, or state (admin writes)", labels=["what"])
        disk_full.add_metric(["cache"], stats.disk_full)
        disk_full.add_metric(["state"], observer.state_disk_full)
        families.append(disk_full)
        storage_errors = CounterMetricFamily("registry_proxy_storage_errors", "Calls to the cache's object storage "
                                             "that failed", labels=["backend"])
        storage_errors.add_metric([stats.backend], stats.backend_errors)
        families += [storage_errors,
                     CounterMetricFamily("registry_proxy_fill_waits", "Blob downloads that waited for another "
                                         "replica sharing the cache to download the blob",
                                         value=services.blobs.waits)]
        objects = GaugeMetricFamily("registry_proxy_cache_objects", "Objects in the cache", labels=["kind"])
        objects.add_metric(["blob"], stats.blobs)
        objects.add_metric(["manifest"], stats.manifests)
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
        paused = GaugeMetricFamily("registry_proxy_upstream_paused", "1 while an upstream that kept failing is left "
                                   "alone (its circuit is open)", labels=["registry"])
        for label in {observer.label(r) for r in services.upstream.breakers.open_circuits()}:
            paused.add_metric([label], 1)
        skipped = CounterMetricFamily("registry_proxy_upstream_skipped_requests", "Requests not sent to an upstream "
                                      "because it was left alone after failing", labels=["registry"])
        skips: dict[str, int] = {}
        for registry, count in services.upstream.breakers.skipped.items():
            skips[observer.label(registry)] = skips.get(observer.label(registry), 0) + count
        for label, count in skips.items():
            skipped.add_metric([label], count)
        families += [objects, mints, expiry, paused, skipped]
        hub = observer.upstreams.get(DOCKER_HUB)
        if hub is not None and hub.ratelimit_remaining is not None:
            families.append(GaugeMetricFamily("registry_proxy_dockerhub_ratelimit_remaining",
                                              "Docker Hub pulls left in the current window",
                                              value=hub.ratelimit_remaining))
        return families

    return StateCollector(read)


def new_observer(app: web.Application) -> Observer:
    return Observer(lambda: app[LIVE].known_registries(), lambda: app[LIVE].envs)
