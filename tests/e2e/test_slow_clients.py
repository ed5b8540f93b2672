"""Slow clients against the real proxy: header timeout, idle keep-alive, connection limit, open-file limit.

Waits are blocking reads with a timeout, never sleeps: a read that returns
b"" is the proxy closing the connection. The long version (1,000 slow
connections while skopeo pulls, under a 1024 open-file limit) takes about a
minute and runs only with REGISTRY_PROXY_LONG_TESTS=1.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest

from .http import get
from .images import build_image, push, sha256_digest
from .proxyproc import ProxyFactory, ProxyProcess
from .tools import skopeo_ok
from .upstream import Upstream

LONG = os.environ.get("REGISTRY_PROXY_LONG_TESTS") == "1"


def connect(proxy: ProxyProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes `sock` within `timeout` (what it sends meanwhile is read and dropped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def request(sock: socket.socket, path: str = "/healthz") -> bytes:
    """One complete keep-alive request on `sock`; the response head."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode())
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_trickled_headers_are_cut_off_at_the_header_timeout(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"server": {"header_timeout": "1s"}})
    with connect(proxy) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
        lines = 0
        # A header line every 0.3 s: activity does not move the deadline.
        while not closed_within(sock, 0.3):
            sock.sendall(f"X-Slow-{lines}: 1\r\n".encode())
            lines += 1
            assert time.monotonic() - opened < 5, "the trickling client was not cut off"
        held = time.monotonic() - opened
    assert lines >= 2 and 0.9 <= held < 3, (lines, held)
    # Other clients were served meanwhile and afterwards.
    assert get(proxy.host, "/healthz").status == 200


def test_a_later_request_head_has_the_same_deadline(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"server": {"header_timeout": "1s", "keepalive_timeout": "60s"}})
    with connect(proxy) as sock:
        assert request(sock).startswith(b"HTTP/1.1 200")
        # Idle well past the header timeout is fine: that is keep-alive, not a slow head.
        assert not closed_within(sock, 1.5)
        assert request(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        assert closed_within(sock, 5)
        assert time.monotonic() - started < 3


def test_idle_keepalive_connections_are_closed(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy({"server": {"keepalive_timeout": "1s"}})
    with connect(proxy) as sock:
        assert request(sock).startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()
        assert closed_within(sock, 5)
        assert 0.9 <= time.monotonic() - idle_since < 3


def test_at_the_connection_limit_slow_clients_make_way(make_proxy: ProxyFactory) -> None:
    # A header timeout far longer than the test: the limit alone makes room.
    proxy = make_proxy({"server": {"max_connections": 20, "header_timeout": "60s"}})
    slow = [connect(proxy) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
        for _ in range(3):
            assert get(proxy.host, "/healthz").status == 200
        # The ones that waited longest for their headers were closed to make room.
        closed = [index for index, sock in enumerate(slow) if closed_within(sock, 0.2)]
        assert closed and len(closed) <= 6, closed
        assert min(closed) < 6, closed
    finally:
        for sock in slow:
            sock.close()


def test_the_open_file_limit_is_raised_to_the_hard_limit(make_proxy: ProxyFactory) -> None:
    hard = int(Path("/proc/self/limits").read_text().split("Max open files")[1].split()[1])
    proxy = make_proxy({}, launcher=("prlimit", f"--nofile=512:{hard}", "--"))
    limits = Path(f"/proc/{proxy.pid}/limits").read_text()
    soft_now, hard_now = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()  # type: ignore[union-attr]
    assert (int(soft_now), int(hard_now)) == (hard, hard)
    assert f"open-file limit {hard} (raised from 512)" in proxy.log_text()


class SlowClients:
    """`count` connections that each send one header line every `interval` seconds and reconnect once closed."""

    def __init__(self, port: int, count: int, interval: float = 5.0) -> None:
        self.port, self.count, self.interval = port, count, interval
        self.closed_by_proxy = 0
        self.answered = 0  # connections that got a response: their head was not meant to complete
        self.connects = 0
        self.open_peak = 0
        self._sent: dict[socket.socket, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self, selector: selectors.BaseSelector, due: dict[socket.socket, float], when: float) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        selector.register(sock, selectors.EVENT_READ)
        due[sock] = when
        self._sent[sock] = 0
        self.connects += 1

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        due: dict[socket.socket, float] = {}
        start = time.monotonic()
        for index in range(self.count):
            self._connect(selector, due, start + self.interval * index / self.count)
        reconnect: list[float] = []
        while not self._stop.is_set():
            now = time.monotonic()
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data:
                    self.answered += 1
                else:
                    self.closed_by_proxy += 1
                    selector.unregister(sock)
                    del due[sock], self._sent[sock]
                    sock.close()
                    reconnect.append(now + self.interval)  # back at its next tick, as a trickling client is
            for when in [w for w in reconnect if w <= now]:
                reconnect.remove(when)
                self._connect(selector, due, now)
            for sock, when in list(due.items()):
                if when <= now:
                    lines = self._sent[sock]
                    try:
                        sock.send(b"GET /v2/ HTTP/1.1\r\n" if lines == 0 else f"X-Slow-{lines}: 1\r\n".encode())
                        self._sent[sock] = lines + 1
                    except OSError:
                        pass  # still connecting: the same line goes at the next tick
                    due[sock] = when + self.interval
            self.open_peak = max(self.open_peak, len(due))
        for sock in due:
            sock.close()
        selector.close()


@pytest.mark.skipif(not LONG, reason="long test (about 60 s): set REGISTRY_PROXY_LONG_TESTS=1 to run it")
def test_pulls_work_with_1000_slow_connections_under_a_1024_fd_limit(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    images = {tag: build_image(oci_layout, tag, layer_sizes=[2_000_000, 300_000]) for tag in ("1", "2", "3")}
    for tag in images:
        push(plain_upstream, oci_layout, tag, "org/app")
    proxy = make_proxy({"registries": [{"address": "quay.io", "endpoint": plain_upstream.url}]},
                       launcher=("prlimit", "--nofile=1024:1024", "--"))
    pulls: list[float] = []
    fds: list[int] = []
    with SlowClients(proxy.port, 1000) as slow:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            for tag, image in images.items():
                dest = tmp_path / f"pull-{len(pulls)}"
                began = time.monotonic()
                skopeo_ok("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{proxy.host}/quay.io/org/app:{tag}",
                          f"dir:{dest}", timeout=60)
                pulls.append(time.monotonic() - began)
                fds.append(len(os.listdir(f"/proc/{proxy.pid}/fd")))
                for digest in image.blob_digests:
                    assert sha256_digest((dest / digest.split(":")[1]).read_bytes()) == digest
            assert get(proxy.host, "/v2/").status in (200, 401)
    log = proxy.log_text()
    print(f"\n{len(pulls)} pulls, slowest {max(pulls):.2f}s, median {sorted(pulls)[len(pulls) // 2]:.2f}s; "
          f"slow clients: {slow.connects} connects, {slow.closed_by_proxy} closed by the proxy, {slow.answered} answered, "
          f"peak {slow.open_peak} open; proxy fds after each pull: min {min(fds)}, max {max(fds)}; log {len(log)} bytes, "
          f"{log.count('cannot accept')} accept-error lines")
    assert slow.open_peak >= 1000 and slow.closed_by_proxy > 0 and slow.answered == 0
    assert log.count("cannot accept") < 20 and len(log) < 5_000_000
