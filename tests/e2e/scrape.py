"""Reading the proxy's /metrics the way Prometheus does, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .http import get
from .proxyproc import ProxyProcess

Key = tuple[str, tuple[tuple[str, str], ...]]


class Scrape:
    """One parsed /metrics answer: sample values by (name, labels), and each family's type."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[Key, float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """A sample's value; 0 for a labelled series not created yet (as PromQL's `or vector(0)`)."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, tuple(sorted(labels.items()))) in self.values

    def label_values(self, label: str) -> set[str]:
        return {value for _, labels in self.values for key, value in labels if key == label}


def scrape(proxy: ProxyProcess, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = get(proxy.host, "/metrics", **headers)
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["content-type"].startswith("text/plain; version="), reply.headers
    return Scrape(reply.body.decode())


def fetches_done(proxy: ProxyProcess) -> bool:
    """No blob download in flight: each one started has been committed to the cache, or given up."""
    return scrape(proxy)("registry_proxy_singleflight_inflight") == 0
