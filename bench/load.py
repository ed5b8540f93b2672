"""Load generators (curl, wrk) and the parsers of what they print.

Clients are the same external programs for every target, so differences
between targets come from the servers, not from a Python client's overhead.
Every body that a number is reported for is checked: status and size always,
and the sha256 where the digest is known and the run does not measure the hash.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

__all__ = [
    "CURL_WRITE_OUT",
    "CurlResult",
    "HerdResult",
    "WrkResult",
    "curl",
    "curl_sha256",
    "herd",
    "parse_curl_write_out",
    "parse_wrk",
    "wrk",
]

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
CURL_WRITE_OUT = "%{size_download} %{time_total} %{http_code}"
# %{stderr} keeps the figures apart from a body that goes to stdout.
_CURL_WRITE_OUT_STDERR = "%{stderr}" + CURL_WRITE_OUT

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")


class LoadError(RuntimeError):
    """A client saw a wrong status, size or body: no number may be reported."""


@dataclass(frozen=True)
class CurlResult:
    size: int
    seconds: float
    status: int

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def parse_curl_write_out(text: str) -> CurlResult:
    """Parse what `-w CURL_WRITE_OUT` printed: "<bytes> <seconds> <status>"."""
    fields = text.split()
    if len(fields) != 3:
        raise ValueError(f"curl -w output {text!r} is not '<size> <time> <code>'")
    return CurlResult(size=int(fields[0]), seconds=float(fields[1]), status=int(fields[2]))


def curl(url: str, *, headers: dict[str, str] | None = None, expect_status: int = 200,
         expect_size: int | None = None) -> CurlResult:
    """One GET with the body thrown away; fails on any other status or size."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", CURL_WRITE_OUT, *_header_args(headers), url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise LoadError(f"curl {url} exited with {done.returncode}: {done.stderr.strip()}")
    result = parse_curl_write_out(done.stdout)
    _check(url, result, expect_status, expect_size)
    return result


def curl_sha256(url: str, digest: str, *, expect_size: int | None = None) -> CurlResult:
    """GET piped into sha256sum; fails unless the body hashes to `digest`."""
    client = _start_hashed(url)
    return _finish_hashed(url, client, digest, expect_size)


@dataclass(frozen=True)
class HerdResult:
    clients: int
    seconds: float


def herd(url: str, digest: str, clients: int, *, expect_size: int) -> HerdResult:
    """`clients` concurrent GETs of one blob, each body hashed and compared with `digest`."""
    start = time.perf_counter()
    running = [_start_hashed(url) for _ in range(clients)]
    failures: list[str] = []
    for client in running:
        try:
            _finish_hashed(url, client, digest, expect_size)
        except LoadError as exc:
            failures.append(str(exc))
    elapsed = time.perf_counter() - start
    if failures:
        raise LoadError(f"{len(failures)} of {clients} herd GETs failed; first: {failures[0]}")
    return HerdResult(clients=clients, seconds=elapsed)


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output: Requests/sec, the 99% line, and any errors it reports."""
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)\s*$", text, re.M)
    total = re.search(r"^\s+(\d+) requests in ", text, re.M)
    if rate is None or p99 is None or total is None:
        raise ValueError(f"not wrk --latency output:\n{text}")
    non_2xx = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)\s*$", text, re.M)
    errors = re.search(r"^\s+Socket errors: (.*)$", text, re.M)
    socket_errors: dict[str, int] = {}
    if errors is not None:
        socket_errors = {name: int(count) for name, count in re.findall(r"(\w+) (\d+)", errors.group(1))}
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        p99_ms=parse_duration_s(p99.group(1)) * 1e3,
        requests=int(total.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def parse_duration_s(text: str) -> float:
    """A wrk duration such as "476.48us", "2.85ms" or "1.20s", in seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def wrk(url: str, *, connections: int, seconds: int, headers: dict[str, str] | None = None) -> WrkResult:
    """Run wrk; fails if any response was not 2xx or any socket error occurred."""
    # wrk refuses fewer connections than threads, and one connection needs one thread.
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *_header_args(headers), url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode != 0:
        raise LoadError(f"wrk {url} exited with {done.returncode}: {done.stderr.strip()}")
    result = parse_wrk(done.stdout)
    if result.non_2xx_3xx:
        raise LoadError(f"wrk {url}: {result.non_2xx_3xx} of {result.requests} responses were not 2xx/3xx")
    if any(result.socket_errors.values()):
        raise LoadError(f"wrk {url}: socket errors {result.socket_errors}")
    if result.requests == 0:
        raise LoadError(f"wrk {url}: no request completed")
    return result


def _header_args(headers: dict[str, str] | None) -> list[str]:
    return [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]


def _check(url: str, result: CurlResult, expect_status: int, expect_size: int | None) -> None:
    if result.status != expect_status:
        raise LoadError(f"GET {url} answered {result.status}, expected {expect_status}")
    if expect_size is not None and result.size != expect_size:
        raise LoadError(f"GET {url} returned {result.size} bytes, expected {expect_size}")


@dataclass
class _Hashed:
    curl: subprocess.Popen[bytes]
    sha: subprocess.Popen[bytes]


def _start_hashed(url: str) -> _Hashed:
    # A pipe into sha256sum rather than files: nothing touches the disk, so the
    # client side stays the same for every target.
    client = subprocess.Popen(["curl", "-s", "-w", _CURL_WRITE_OUT_STDERR, url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None
    sha = subprocess.Popen(["sha256sum"], stdin=client.stdout, stdout=subprocess.PIPE)
    client.stdout.close()  # sha256sum holds the only read end, so curl sees EPIPE if it dies
    return _Hashed(client, sha)


def _finish_hashed(url: str, hashed: _Hashed, digest: str, expect_size: int | None) -> CurlResult:
    hash_out, _ = hashed.sha.communicate(timeout=900)
    assert hashed.curl.stderr is not None
    write_out = hashed.curl.stderr.read().decode()
    hashed.curl.stderr.close()
    code = hashed.curl.wait(timeout=60)
    if code != 0:
        raise LoadError(f"curl {url} exited with {code}: {write_out.strip()}")
    result = parse_curl_write_out(write_out)
    _check(url, result, 200, expect_size)
    got = "sha256:" + hash_out.decode().split()[0]
    if got != digest:
        raise LoadError(f"GET {url} body hashes to {got}, expected {digest}")
    return result
