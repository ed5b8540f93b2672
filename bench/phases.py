"""The six phases. Each runs in rounds, rotating the order of the targets every
round, so that no target always goes first (cold page cache, CPU boost) or
last; every value of every round is kept, and the tables show medians.

A phase records into `Results`: measure key -> target name -> one value per round.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.upstream import Upstream

from bench.load import MANIFEST_ACCEPT, curl, curl_sha256, herd, wrk
from bench.targets import Started, Target, TargetSpec, clear_peak, proc_status_kb, start_target

__all__ = ["MEASURES", "Blob", "Measure", "Results", "rotations"]

REPO = "bench/big"
_LOG_SETTLE_S = 1.0  # distribution writes its access line after the body, and a proxy may still be fetching
_IDLE_AFTER_S = 3.0


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    versus_direct: bool = False  # a ratio to direct means something (direct has no cache, no upstream)


MEASURES = [
    Measure("cold_mbps", "cold blob", "MB/s", True, versus_direct=True),
    Measure("cold_upstream_gets", "cold blob upstream GETs", "count", False),
    Measure("warm_mbps", "warm blob", "MB/s", True, versus_direct=True),
    Measure("warm_range_mbps", "warm range (second half)", "MB/s", True, versus_direct=True),
    *(Measure(f"manifest_rps_c{c}", f"manifest by tag, c={c}", "req/s", True, versus_direct=True) for c in (1, 16, 64)),
    *(Measure(f"manifest_p99_ms_c{c}", f"manifest p99, c={c}", "ms", False, versus_direct=True) for c in (1, 16, 64)),
    Measure("herd_upstream_gets", "herd upstream GETs", "count", False),
    Measure("herd_seconds", "herd time", "s", False),
    Measure("herd_peak_rss_mib", "herd peak RSS", "MiB", False),
    Measure("herd_per_stream_mib", "herd RSS growth per stream", "MiB", False),
    Measure("wide_upstream_gets", "wide herd upstream GETs", "count", False),
    Measure("wide_seconds", "wide herd time", "s", False),
    Measure("wide_peak_rss_mib", "wide herd peak RSS", "MiB", False),
    Measure("wide_per_stream_mib", "wide herd RSS growth per stream", "MiB", False),
    Measure("idle_rss_mib", "idle RSS", "MiB", False),
    Measure("startup_s", "start-up", "s", False),
]


@dataclass(frozen=True)
class Blob:
    tag: str
    digest: str
    size: int


@dataclass
class Results:
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)  # per-run details: URLs, rounds, orders

    def add(self, measure: str, target: str, value: float) -> None:
        self.values.setdefault(measure, {}).setdefault(target, []).append(value)


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The target order of each round: round r starts r places further on."""
    n = len(names)
    return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)]


def startup(specs: Sequence[TargetSpec], direct: Upstream, base: Path, rounds: int, results: Results,
            log: Callable[[str], None]) -> None:
    """Spawn to first /v2/ answer, and VmRSS a fixed time later; a fresh data dir every start."""
    by_name = {spec.name: spec for spec in specs}
    for r, order in enumerate(rotations(list(by_name), rounds)):
        for name in order:
            where = base / f"startup-{r}-{name}"
            started = start_target(by_name[name], where, direct)
            try:
                time.sleep(_IDLE_AFTER_S)
                rss = proc_status_kb(started.target.pid, "VmRSS")
            finally:
                started.target.stop()
            shutil.rmtree(where, ignore_errors=True)
            results.add("startup_s", name, started.startup_s)
            results.add("idle_rss_mib", name, rss / 1024)
            log(f"  round {r + 1} {name}: start-up {started.startup_s:.3f} s, idle RSS {rss / 1024:.1f} MiB")


def cold_blob(targets: Sequence[Target], blobs: dict[tuple[int, str], Blob], direct: Upstream, rounds: int,
              results: Results, log: Callable[[str], None]) -> None:
    for r, order in enumerate(rotations([t.name for t in targets], rounds)):
        for target in _in_order(targets, order):
            blob = blobs[r, target.name]
            got = curl(target.blob_url(REPO, blob.digest), expect_size=blob.size)
            results.add("cold_mbps", target.name, got.mb_per_s)
            line = f"  round {r + 1} {target.name}: {got.mb_per_s:.0f} MB/s"
            if target.name != "direct":
                gets = _upstream_gets(direct, blob.digest)
                results.add("cold_upstream_gets", target.name, gets)
                line += f", {gets} upstream GET(s)"
            log(line)


def warm_blob(targets: Sequence[Target], blobs: dict[tuple[int, str], Blob], rounds: int, results: Results,
              log: Callable[[str], None]) -> None:
    """The blob each target fetched cold, again: whole, then its second half as a Range."""
    for r, order in enumerate(rotations([t.name for t in targets], rounds)):
        for target in _in_order(targets, order):
            blob = blobs[r, target.name]
            url = target.blob_url(REPO, blob.digest)
            whole = curl(url, expect_size=blob.size)
            half = blob.size // 2
            ranged = curl(url, headers={"Range": f"bytes={half}-"}, expect_status=206, expect_size=blob.size - half)
            # Hashing is kept out of the timed requests: sha256sum would cap them.
            curl_sha256(url, blob.digest, expect_size=blob.size)
            results.add("warm_mbps", target.name, whole.mb_per_s)
            results.add("warm_range_mbps", target.name, ranged.mb_per_s)
            log(f"  round {r + 1} {target.name}: {whole.mb_per_s:.0f} MB/s, range {ranged.mb_per_s:.0f} MB/s")


def manifests(targets: Sequence[Target], tag: str, rounds: int, seconds: int, results: Results,
              log: Callable[[str], None]) -> None:
    headers = {"Accept": MANIFEST_ACCEPT}
    for target in targets:
        curl(target.manifest_url(REPO, tag), headers=headers)  # warm the cache; must be 200
    for r, order in enumerate(rotations([t.name for t in targets], rounds)):
        for connections in (1, 16, 64):
            for target in _in_order(targets, order):
                got = wrk(target.manifest_url(REPO, tag), connections=connections, seconds=seconds, headers=headers)
                results.add(f"manifest_rps_c{connections}", target.name, got.requests_per_s)
                results.add(f"manifest_p99_ms_c{connections}", target.name, got.p99_ms)
                log(f"  round {r + 1} c={connections} {target.name}: {got.requests_per_s:.0f} req/s, "
                    f"p99 {got.p99_ms:.2f} ms")


def herds(prefix: str, targets: Sequence[Target], blobs: dict[tuple[int, str], Blob], clients: int,
          direct: Upstream, rounds: int, results: Results, log: Callable[[str], None]) -> None:
    """`clients` concurrent cold GETs of one fresh blob per target and round, every body hashed."""
    for r, order in enumerate(rotations([t.name for t in targets], rounds)):
        for target in _in_order(targets, order):
            blob = blobs[r, target.name]
            before_kb = proc_status_kb(target.pid, "VmRSS")
            clear_peak(target.pid)
            got = herd(target.blob_url(REPO, blob.digest), blob.digest, clients, expect_size=blob.size)
            peak_kb = proc_status_kb(target.pid, "VmHWM")
            gets = _upstream_gets(direct, blob.digest)
            per_stream = (peak_kb - before_kb) / 1024 / clients
            results.add(f"{prefix}_upstream_gets", target.name, gets)
            results.add(f"{prefix}_seconds", target.name, got.seconds)
            results.add(f"{prefix}_peak_rss_mib", target.name, peak_kb / 1024)
            results.add(f"{prefix}_per_stream_mib", target.name, per_stream)
            log(f"  round {r + 1} {target.name}: {gets} upstream GET(s), {got.seconds:.2f} s, "
                f"peak RSS {peak_kb / 1024:.1f} MiB (from {before_kb / 1024:.1f}), {per_stream:.2f} MiB/stream")


def start_all(specs: Sequence[TargetSpec], direct: Upstream, base: Path) -> list[Started]:
    started: list[Started] = []
    try:
        for spec in specs:
            started.append(start_target(spec, base / spec.name, direct))
    except BaseException:
        for one in started:
            one.target.stop()
        raise
    return started


def _in_order(targets: Sequence[Target], order: Sequence[str]) -> list[Target]:
    by_name = {t.name: t for t in targets}
    return [by_name[name] for name in order]


def _upstream_gets(direct: Upstream, digest: str) -> int:
    direct.wait_requests("GET", f"/blobs/{digest}", at_least=1, timeout=10)
    time.sleep(_LOG_SETTLE_S)
    return direct.count_requests("GET", f"/blobs/{digest}")
