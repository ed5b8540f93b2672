"""Fixtures for the e2e suite: real registries, a token server, fakes, the proxy.

Everything is function-scoped and lives under tmp_path, so tests can stop,
kill and corrupt their upstreams freely. Every process or thread a fixture
starts is stopped at teardown, also when the test failed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemons import Containerd, Dockerd
from .faults import FaultyUpstream, RedirectingUpstream
from .images import build_image, push
from .proxyproc import ProxyFactory, ProxyProcess, start_proxy
from .tokenserver import TokenServer
from .tools import log_tail
from .upstream import Upstream, start_registry

UpstreamFactory = Callable[..., Upstream]


def _unique(base: Path, name: str) -> Path:
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    return path


@pytest.fixture
def make_upstream(tmp_path: Path) -> Iterator[UpstreamFactory]:
    """Factory: make_upstream(name="upstream", *, auth=, tls=, users=, token_server=)."""
    started: list[Upstream] = []

    def make(name: str = "upstream", **kwargs: Any) -> Upstream:
        upstream = start_registry(_unique(tmp_path, name), **kwargs)
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def plain_upstream(make_upstream: UpstreamFactory) -> Upstream:
    return make_upstream("plain")


@pytest.fixture
def htpasswd_upstream(make_upstream: UpstreamFactory) -> Upstream:
    """htpasswd over plain HTTP; the one user "alice" may pull and push."""
    return make_upstream("htpasswd", auth="htpasswd", users={"alice": secrets.token_hex(8)})


@pytest.fixture
def tls_upstream(make_upstream: UpstreamFactory) -> Upstream:
    """HTTPS with a test CA (`ca_file`, `cert_dir`) and htpasswd user "alice"."""
    return make_upstream("tls", auth="htpasswd", tls=True, users={"alice": secrets.token_hex(8)})


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    """Users {"bob": random}; "private/" repos need a login; only the seeder pushes."""
    server = TokenServer(tmp_path / "token", {"bob": secrets.token_hex(8)}, private_prefixes=("private/",))
    yield server
    server.stop()


@pytest.fixture
def token_upstream(make_upstream: UpstreamFactory, token_server: TokenServer) -> Upstream:
    """Registry with token auth; `push_creds` is the token server's seeding user."""
    return make_upstream("token", auth="token", token_server=token_server)


@pytest.fixture
def oci_layout(tmp_path: Path) -> Path:
    path = tmp_path / "layout"
    path.mkdir()
    return path


@pytest.fixture
def make_redirecting_upstream() -> Iterator[Callable[[Upstream], RedirectingUpstream]]:
    started: list[RedirectingUpstream] = []

    def make(real: Upstream) -> RedirectingUpstream:
        front = RedirectingUpstream(real)
        started.append(front)
        return front

    yield make
    for front in started:
        front.stop()


@pytest.fixture
def make_faulty_upstream() -> Iterator[Callable[..., FaultyUpstream]]:
    """Factory: make_faulty_upstream(mode, *, layer_size=, piece=, delay=)."""
    started: list[FaultyUpstream] = []

    def make(mode: str, **kwargs: Any) -> FaultyUpstream:
        fake = FaultyUpstream(mode, **kwargs)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Factory: make_proxy(config, *, env=None, name="proxy", launcher=()) -> started ProxyProcess."""
    started: list[ProxyProcess] = []

    def make(config: dict[str, Any], *, env: dict[str, str] | None = None, name: str = "proxy",
             launcher: tuple[str, ...] = ()) -> ProxyProcess:
        # start_proxy kills a proxy that never became ready, so only started
        # ones need tracking.
        proxy = start_proxy(_unique(tmp_path, name), config, env=env, launcher=launcher)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
        # Shown by pytest only when the test failed: the proxy's side of the story.
        print(f"--- {proxy.log_path} (tail) ---\n{log_tail(proxy.log_path)}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/e2e starts real processes; the marker lets a
    # quick run deselect it with -m "not e2e". (This hook sees all items.)
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def short_tokens(tmp_path: Path) -> Iterator[TokenServer]:
    """Registry bearer tokens of one second, so every pull shows the registry
    the current minted password rather than a cached token."""
    server = TokenServer(tmp_path / "short-token", {}, private_prefixes=("private/",), expires_in=1)
    yield server
    server.stop()


@pytest.fixture
def registry(make_upstream: UpstreamFactory, short_tokens: TokenServer, oci_layout: Path) -> Upstream:
    """A token-auth registry holding private/app:1, for minted (ECR, GCR) credentials."""
    upstream = make_upstream("cloud", auth="token", token_server=short_tokens)
    build_image(oci_layout, "1")
    push(upstream, oci_layout, "1", "private/app")
    return upstream


# One daemon per test module: starting one costs seconds, and a module's tests share its set-up.
@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.cleanup()
