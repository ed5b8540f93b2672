"""Private dockerd and containerd instances for the client tests (docs/clients.md),
and the checks every client test makes.

Facts this module relies on (checked on Debian 12: docker.io 20.10.24,
containerd 1.6.20, podman 4.3.1):

* dockerd, containerd, ctr and podman all fall back to the real registry
  (registry-1.docker.io, quay.io) when a mirror fails. Every one of them is
  started with `offline_env()`: HTTP(S)_PROXY aim at a closed loopback port,
  so such a fallback dies on 127.0.0.1:9 instead of leaving the machine. Go
  never sends loopback addresses through a proxy, so the e2e registries and
  the proxy stay reachable.
* dockerd reloads `registry-mirrors` and `insecure-registries` from its
  `--config-file` on SIGHUP, so one daemon (and one vfs data-root) serves a
  whole module of tests that each point it at a new proxy port. A key left
  out of the file keeps its old value on reload.
* dockerd always treats 127.0.0.0/8 as an insecure registry (hard-coded in
  its registry config, not removable), so against a loopback registry it does
  not verify TLS certificates and does not read /etc/docker/certs.d.
* `ctr images pull --hosts-dir DIR` resolves registries in the ctr process
  itself, from DIR/<registry>/hosts.toml (or DIR/_default/hosts.toml); the
  daemon only stores content and unpacks it. An `http://` host in hosts.toml
  is plain HTTP without ctr's `--plain-http`. containerd adds `?ns=<registry>`
  to what it asks a mirror, and verifies TLS on loopback too.
* podman refuses a --runroot longer than 50 characters.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from .images import ImageInfo, read_blob
from .proxyproc import ProxyProcess
from .tools import log_tail, reap, require_binary, spawn
from .upstream import Upstream

# A closed port on loopback: whatever a daemon does not send to the proxy
# (a fallback to the real registry) fails here, on the machine.
DEAD_PROXY = "http://127.0.0.1:9"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "FTP_PROXY")

# What docker.io 20.10 can run with here: no overlay, no iptables, no bridge.
DOCKERD_BASE_CONFIG: dict[str, Any] = {
    "storage-driver": "vfs",
    "iptables": False,
    "ip6tables": False,
    "bridge": "none",
}


def require_root(what: str) -> None:
    """dockerd, containerd, `ctr images mount` and podman's image mounts need
    root here; like a missing binary, not being root fails under CI=true."""
    if os.geteuid() != 0:
        message = f"{what} needs root (running as uid {os.geteuid()})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment with every proxy variable aimed at DEAD_PROXY."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _PROXY_VARS}
    for name, value in (("HTTP_PROXY", DEAD_PROXY), ("HTTPS_PROXY", DEAD_PROXY), ("NO_PROXY", "127.0.0.1,localhost")):
        env[name] = env[name.lower()] = value
    env.update(extra or {})
    return env


def run(argv: list[str], *, env: dict[str, str], timeout: float = 120, check: bool = True,
        text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run a client command; with check=True fail with its output on rc != 0."""
    result = subprocess.run(argv, capture_output=True, text=text, timeout=timeout, check=False, env=env,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        stderr = result.stderr if text else result.stderr.decode("utf-8", "replace")
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{stderr}")
    return result


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/self/mountinfo)."""
    root = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount a daemon left behind (that would
    delete whatever is mounted there, possibly outside the test's directory).

    Network-namespace handles (nsfs bind mounts a stopped dockerd leaves
    under exec-root/netns) are detached first: nothing can be deleted
    through them.
    """
    if not path.exists():
        return
    for point in mounts_under(path):
        if "/netns/" in point:
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = mounts_under(path)
    if left:
        raise AssertionError(f"not removing {path}: still mounted: {left}")
    shutil.rmtree(path, ignore_errors=True)


def _wait_unix_ping(sock: Path, path: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        if proc.poll() is not None:
            pytest.fail(f"daemon exited with {proc.returncode} before {sock} answered:\n"
                        f"{log_tail(proc.log_path)}")  # type: ignore[attr-defined]
        if sock.exists():
            try:
                conn = _UnixHTTPConnection(str(sock))
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        return
                    last = f"status {resp.status}"
                finally:
                    conn.close()
            except OSError as exc:
                last = repr(exc)
        if time.monotonic() > deadline:
            pytest.fail(f"{sock} not ready after {timeout}s ({last}):\n"
                        f"{log_tail(proc.log_path)}")  # type: ignore[attr-defined]
        time.sleep(0.1)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


# -- dockerd -------------------------------------------------------------------


class Dockerd:
    """A dockerd of its own: data-root, exec-root, pidfile, socket and daemon.json under `base`."""

    def __init__(self, base: Path) -> None:
        require_root("dockerd")
        self.dockerd = require_binary("dockerd")
        self.docker_bin = require_binary("docker")
        require_binary("containerd")  # dockerd starts its own from PATH
        self.base = base
        self.data_root = base / "data"
        # Short: dockerd's containerd puts sockets under it (108-byte limit).
        self.exec_root = base / "x"
        self.socket = base / "docker.sock"
        self.config_file = base / "daemon.json"
        self.log_path = base / "dockerd.log"
        self.host = f"unix://{self.socket}"
        self.env = offline_env({"DOCKER_HOST": self.host})
        # A client config dir of its own: no credential helpers, no stray auth.
        self.env["DOCKER_CONFIG"] = str(base / "client")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, config: dict[str, Any] | None = None, timeout: float = 60) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "client").mkdir(exist_ok=True)
        self._write_config(config or {})
        argv = [self.dockerd, "--config-file", str(self.config_file), "--data-root", str(self.data_root),
                "--exec-root", str(self.exec_root), "--pidfile", str(self.base / "docker.pid"),
                "-H", self.host]
        self._proc = spawn(argv, self.log_path, env=offline_env())
        try:
            _wait_unix_ping(self.socket, "/_ping", self._proc, timeout)
        except BaseException:
            self.stop()
            raise

    def _write_config(self, config: dict[str, Any]) -> None:
        # Its trust key too: by default dockerd 20.10 creates /etc/docker/key.json.
        own = {"deprecated-key-path": str(self.base / "key.json")}
        self.config_file.write_text(json.dumps({**DOCKERD_BASE_CONFIG, **own, **config}, indent=2) + "\n")

    def reconfigure(self, config: dict[str, Any], timeout: float = 15) -> None:
        """Write daemon.json (base settings plus `config`), SIGHUP, wait until applied.

        Only reloadable keys make sense here: registry-mirrors and
        insecure-registries are, and are what the client docs set. A key
        left out is reset to empty (dockerd would keep its old value).
        """
        assert self._proc is not None and self._proc.poll() is None, "dockerd is not running"
        # A key missing from the file keeps its old value on reload: set both.
        config = {"registry-mirrors": [], "insecure-registries": [], **config}
        self._write_config(config)
        self._proc.send_signal(signal.SIGHUP)
        want_mirrors = [m.rstrip("/") for m in config.get("registry-mirrors", [])]
        want_insecure = set(config.get("insecure-registries", []))
        deadline = time.monotonic() + timeout
        while True:
            info = json.loads(self.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
            mirrors = [m.rstrip("/") for m in info.get("Mirrors") or []]
            insecure = {name for name, index in (info.get("IndexConfigs") or {}).items() if not index["Secure"]}
            if mirrors == want_mirrors and want_insecure <= insecure:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd did not apply {config} after SIGHUP: {info}\n{log_tail(self.log_path)}")
            time.sleep(0.1)

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               text: bool = True) -> subprocess.CompletedProcess[Any]:
        return run([self.docker_bin, "-H", self.host, *args], env=self.env, check=check, timeout=timeout, text=text)

    def stop(self) -> None:
        if self._proc is not None:
            reap(self._proc, timeout=30)
            self._proc = None
        self._stop_leftover_containerd()

    def _stop_leftover_containerd(self) -> None:
        # dockerd stops the containerd it started on a clean exit; after a
        # SIGKILL that child may live on. Its pidfile names it; check it is
        # ours (its config lives under our exec-root) before signalling it.
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if str(self.exec_root) not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop, then delete data-root and exec-root (vfs keeps full copies of every layer)."""
        self.stop()
        remove_tree(self.data_root)
        remove_tree(self.exec_root)


# -- containerd ------------------------------------------------------------------


class Containerd:
    """A containerd of its own (root, state, socket under `base`), driven with ctr.

    CRI is disabled (no CNI, no kubelet here); the `native` snapshotter needs
    nothing from the kernel, unlike overlayfs, so it is the one used.
    """

    SNAPSHOTTER = "native"

    def __init__(self, base: Path) -> None:
        require_root("containerd")
        self.containerd = require_binary("containerd")
        self.ctr_bin = require_binary("ctr")
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.socket = base / "containerd.sock"
        self.config_file = base / "config.toml"
        self.log_path = base / "containerd.log"
        self.env = offline_env()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",\n'
            '  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",\n'
            '  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "[debug]\n"
            '  address = ""\n'
            "[metrics]\n"
            '  address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{self.base / "opt"}"\n'
        )
        argv = [self.containerd, "--config", str(self.config_file), "--log-level", "info"]
        self._proc = spawn(argv, self.log_path, env=self.env)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    pytest.fail(f"containerd exited with {self._proc.returncode}:\n{log_tail(self.log_path)}")
                if self.socket.exists() and self.ctr("version", check=False, timeout=10).returncode == 0:
                    return
                if time.monotonic() > deadline:
                    pytest.fail(f"containerd not ready after {timeout}s:\n{log_tail(self.log_path)}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def ctr(self, *args: str, check: bool = True, timeout: float = 120,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
        return run([self.ctr_bin, "--address", str(self.socket), *args], env=self.env, check=check,
                   timeout=timeout, text=text)

    def stop(self) -> None:
        if self._proc is not None:
            reap(self._proc, timeout=20)
            self._proc = None

    def cleanup(self) -> None:
        self.stop()
        remove_tree(self.root)
        remove_tree(self.state)


# -- checks every client test makes ------------------------------------------------


def hub_and_quay(upstream: Upstream) -> dict[str, Any]:
    """Proxy config: Docker Hub and quay.io names are both served by `upstream`."""
    return {"registries": [{"address": "docker.io", "endpoint": upstream.url},
                           {"address": "quay.io", "endpoint": upstream.url}]}


def layer_file(layout: Path, image: ImageInfo, index: int = 0) -> bytes:
    """The one file (data/layer-<index>.bin) in the image's layer, from the pushed blob."""
    with read_blob(layout, image.layers[index][0]) as blob:
        data = blob.read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        member = tar.extractfile(f"data/layer-{index}.bin")
        assert member is not None
        return member.read()


def proxy_lines(proxy: ProxyProcess, path: str, methods: tuple[str, ...] = ("GET", "HEAD"),
                timeout: float = 5) -> list[str]:
    """Access-log lines of the proxy for `path` (logged without its query string).

    A line is written after its response, so it may lag the client by a moment.
    """
    pattern = re.compile(rf'"(?:{"|".join(methods)}) {re.escape(path)}"')
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in proxy.log_text().splitlines() if pattern.search(line)]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def proxy_fetches(upstream: Upstream, repo: str) -> list[str]:
    """Paths the proxy (not the test's seeding skopeo) GOT from `repo` on the upstream."""
    return [r["path"] for r in upstream.log_requests()
            if r["method"] == "GET" and r["user_agent"].startswith("registry-proxy/")
            and r["path"].startswith(f"/v2/{repo}/")]


def assert_through_proxy(proxy: ProxyProcess, upstream: Upstream, image: ImageInfo, repo: str, tag: str, *,
                         proxy_repo: str | None = None, registry: str | None = None) -> None:
    """The client asked the proxy for /v2/<proxy_repo>/manifests/<tag>, the proxy
    resolved it to `registry`, and fetched the manifest and each blob of
    `repo` from the upstream exactly once."""
    path = f"/v2/{proxy_repo or repo}/manifests/{tag}"
    lines = proxy_lines(proxy, path)
    assert any('" 200 ' in line for line in lines), f"proxy log has no 200 for {path}:\n{proxy.log_text()[-3000:]}"
    if registry is not None:
        assert all(f" registry={registry} " in line for line in lines), lines
    wanted = [f"/v2/{repo}/blobs/{digest}" for digest in image.blob_digests]
    deadline = time.monotonic() + 5
    while not set(wanted) <= set(fetched := proxy_fetches(upstream, repo)) and time.monotonic() < deadline:
        time.sleep(0.05)
    manifests = [p for p in fetched if "/manifests/" in p]
    # By tag or by digest (docker HEADs the tag, then GETs the digest), but once.
    assert manifests in ([f"/v2/{repo}/manifests/{tag}"], [f"/v2/{repo}/manifests/{image.manifest_digest}"]), fetched
    assert sorted(p for p in fetched if "/blobs/" in p) == sorted(wanted), fetched
