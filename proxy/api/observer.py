"""What the proxy saw: Prometheus metrics and per-upstream state for the status page.

One ``Observer`` per application, with its own CollectorRegistry, so nothing
is module-global. Registry labels are bounded: a registry the operator
configured, whitelisted or made the default keeps its name; every other one
is ``other``. Repository names and digests never become labels.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from proxy.api.failure_log import FailureLog
from proxy.pullthrough.ports import BodySource, CacheResult
from proxy.storage.base import VerifyReport
from proxy.upstream.endpoints import EndpointKind

__all__ = ["Observer", "UpstreamState"]

OTHER = "other"


@dataclass
class UpstreamState:
    # The last answer of any kind (a 5xx or a refusal too), and the last that was not a failure.
    last_status: int | None = None
    last_latency: float | None = None
    last_seen: float | None = None
    last_success: tuple[float, int, float] | None = None  # (time, status, latency)
    last_failure: float | None = None
    # (time, policy, message): a request the proxy refused to send, so the upstream was never contacted.
    blocked: tuple[float, str, str] | None = None
    ratelimit_remaining: int | None = None
    # (time, message, repeats): the same message again bumps the count.
    errors: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=10))


class Observer:
    def __init__(self, known_registries: Callable[[], Iterable[str]],
                 environments: Callable[[], Collection[str]] = lambda: (),
                 failure_log: FailureLog | None = None) -> None:
        self._known = known_registries
        self._failure_log = failure_log or FailureLog()
        self._environments = environments
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        self.upstreams: dict[str, UpstreamState] = {}
        r = self.registry
        self.requests = Counter("registry_proxy_requests", "Registry API requests answered",
                                ["registry", "endpoint", "status_class"], registry=r)
        self.bytes_served = Counter("registry_proxy_served_bytes", "Bytes of manifests and blobs sent to clients",
                                    ["source"], registry=r)
        self.cache_hits = Counter("registry_proxy_cache_hits", "Requests answered from the cache", ["kind"],
                                  registry=r)
        self.cache_misses = Counter("registry_proxy_cache_misses", "Requests that went upstream", ["kind"],
                                    registry=r)
        self.stale_serves = Counter("registry_proxy_stale_serves", "Cached tags served because the upstream "
                                    "failed", ["registry"], registry=r)
        self.whitelist_denials = Counter("registry_proxy_whitelist_denials", "Pulls refused by registry.whitelist",
                                         ["registry"], registry=r)
        self.upstream_duration = Histogram("registry_proxy_upstream_request_duration_seconds",
                                           "Time to an upstream's response headers", ["registry"], registry=r,
                                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.environment_requests = Counter("registry_proxy_environment_requests",
                                            "Registry API requests admitted, by the client's environment",
                                            ["environment"], registry=r)
        self.auth_failures = Counter("registry_proxy_auth_failures", "Client authentication refused, by the "
                                     "environment of the key named (unknown: none) and why",
                                     ["environment", "reason"], registry=r)
        self.isolation_refusals = Counter("registry_proxy_isolation_refusals", "Cached content the upstream did not "
                                          "clear an environment to read", ["environment"], registry=r)
        self.inflight = Gauge("registry_proxy_inflight_requests", "Registry API requests being answered",
                              registry=r)
        # Admin writes refused for a full disk; the cache counts its own (see the state collector).
        self.state_disk_full = 0
        self.verify_runs = Counter("registry_proxy_cache_verify_runs", "Runs of cache verify, by how they ended: "
                                   "clean, mismatches or failed", ["result"], registry=r)
        self.verify_checked = Counter("registry_proxy_cache_verify_objects_checked", "Cached objects re-hashed by "
                                      "cache verify", registry=r)
        self.verify_bytes = Counter("registry_proxy_cache_verify_bytes", "Bytes re-hashed by cache verify",
                                    registry=r)
        self.verify_mismatches = Counter("registry_proxy_cache_verify_mismatches", "Cached objects that did not "
                                         "match their digest and were set aside", registry=r)
        self.verify_missing = Counter("registry_proxy_cache_verify_missing", "Cached objects found gone or "
                                      "unreadable by cache verify", registry=r)
        self.verify_last_end = Gauge("registry_proxy_cache_verify_last_end_timestamp_seconds",
                                     "When the last cache verify run ended", registry=r)

    def label(self, registry: str | None) -> str:
        if registry is None:
            return "none"
        return registry if registry in set(self._known()) else OTHER

    def environment_label(self, environment: str | None) -> str:
        # Environments are the admin's to create, so their names are bounded; a
        # token for one deleted since folds into "other".
        if environment is None:
            return "unknown"
        return environment if environment in self._environments() else OTHER

    def environment_request(self, environment: str) -> None:
        self.environment_requests.labels(self.environment_label(environment)).inc()

    def auth_failure(self, environment: str | None, reason: str) -> None:
        self.auth_failures.labels(self.environment_label(environment), reason).inc()

    def isolation_refusal(self, environment: str) -> None:
        self.isolation_refusals.labels(self.environment_label(environment)).inc()

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    # Events

    def _state(self, registry: str) -> UpstreamState:
        # Keyed by label, so registries named only by clients share one entry
        # and cannot grow this without bound.
        return self.upstreams.setdefault(self.label(registry), UpstreamState())

    def upstream_answered(self, registry: str, status: int, seconds: float, ratelimit: str | None) -> None:
        state = self._state(registry)
        now = time.time()
        state.last_status, state.last_latency, state.last_seen = status, seconds, now
        if status < 400:
            state.last_success = (now, status, seconds)
        if ratelimit is not None:
            # Docker Hub: "ratelimit-remaining: 76;w=21600"
            try:
                state.ratelimit_remaining = int(ratelimit.split(";", 1)[0])
            except ValueError:
                pass
        self.upstream_duration.labels(self.label(registry)).observe(seconds)

    def upstream_failed(self, registry: str, message: str, *, endpoint: str | None = None) -> None:
        state = self._state(registry)
        now = time.time()
        state.last_failure = now
        if state.errors and state.errors[-1][1] == message:
            state.errors[-1][0] = now
            state.errors[-1][2] += 1
        else:
            state.errors.append([now, message, 1])
        self._failure_log.failed(self.label(registry), registry, endpoint, message)

    def upstream_blocked(self, registry: str, policy: str, message: str) -> None:
        """A request refused by ``policy`` (the SSRF guard, registry.whitelist): no upstream failure, not logged."""
        self._state(registry).blocked = (time.time(), policy, message)

    def cache_result(self, kind: EndpointKind, result: CacheResult, registry: str) -> None:
        counter = self.cache_hits if result.source is BodySource.CACHE else self.cache_misses
        counter.labels(kind.value).inc()
        if result is CacheResult.STALE:
            self.stale_serves.labels(self.label(registry)).inc()

    def served(self, result: CacheResult, size: int) -> None:
        self.bytes_served.labels(result.source.value).inc(size)

    def cache_verified(self, report: VerifyReport, *, failed: bool) -> None:
        result = "failed" if failed else "mismatches" if report.mismatched else "clean"
        self.verify_runs.labels(result).inc()
        self.verify_checked.inc(report.checked)
        self.verify_bytes.inc(report.bytes)
        self.verify_mismatches.inc(report.mismatched)
        self.verify_missing.inc(report.missing)
        self.verify_last_end.set(report.finished or time.time())

    @staticmethod
    def total(counter: Counter) -> int:
        """A counter's sum over all its labels, as the status page shows it."""
        return int(sum(sample.value for metric in counter.collect() for sample in metric.samples
                       if sample.name.endswith("_total")))


class StateCollector(Collector):
    """Reads values that already live elsewhere (cache, minting) at scrape time."""

    def __init__(self, read: Callable[[], list[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()
