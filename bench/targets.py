"""The servers under test, all on 127.0.0.1, and what the bench reads from /proc about them.

    direct       distribution serving the pushed images itself (the reference)
    peer         a second distribution process in proxy mode in front of direct
    us           this proxy in front of direct
    before       this proxy from another checkout (--before DIR), same venv
    us-uvloop    this proxy on uvloop's event loop (--uvloop)
    us-s3, us-s3-tier  this proxy on S3 storage (--s3, see bench/shared_backends.py)
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.proxyproc import ProxyProcess, start_proxy
from tests.e2e.tools import free_port, require_binary
from tests.e2e.upstream import Upstream, start_registry

__all__ = [
    "PROXY_ADDRESS",
    "Started",
    "Target",
    "TargetSpec",
    "clear_peak",
    "proc_status_kb",
    "start_direct",
    "start_target",
]

PROXY_ADDRESS = "bench.example"  # the registry address clients put in front of repository names
_POLL_S = 0.01


@dataclass
class Target:
    name: str
    url: str
    path_prefix: str  # between /v2/ and the repository name
    pid: int
    stop: Callable[[], object] = field(repr=False)

    def blob_url(self, repo: str, digest: str) -> str:
        return f"{self.url}/v2/{self.path_prefix}{repo}/blobs/{digest}"

    def manifest_url(self, repo: str, reference: str) -> str:
        return f"{self.url}/v2/{self.path_prefix}{repo}/manifests/{reference}"


@dataclass(frozen=True)
class TargetSpec:
    """How to start one target; `kind` is "peer" or "proxy"."""

    name: str
    kind: str
    proxy_config: dict[str, Any] = field(default_factory=dict)
    source_dir: Path | None = None  # run `python -m proxy` from this checkout
    uvloop: bool = False  # on uvloop's event loop, through bench/uvloop_launcher.py
    env: dict[str, str] = field(default_factory=dict)  # added to the proxy's environment


@dataclass(frozen=True)
class Started:
    target: Target
    startup_s: float  # spawn to the first HTTP answer on /v2/, whatever its status


def start_direct(base: Path) -> Upstream:
    return start_registry(base)


def start_target(spec: TargetSpec, base: Path, direct: Upstream) -> Started:
    """Start `spec` in front of `direct`, timing spawn to first answer on /v2/."""
    port = free_port()
    with _FirstAnswer(f"http://127.0.0.1:{port}/v2/") as first:
        if spec.kind == "peer":
            target = _start_peer(spec.name, base, direct, port)
        else:
            target = _start_proxy(spec, base, direct, port)
        try:
            startup = first.wait(started=first.t0)
        except BaseException:
            target.stop()
            raise
    return Started(target, startup)


def proc_status_kb(pid: int, field_name: str) -> int:
    """A /proc/PID/status figure (VmRSS, VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def clear_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS, so a phase's peak is its own (needs root or the same user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _start_peer(name: str, base: Path, direct: Upstream, port: int) -> Target:
    # The same configuration start_registry writes, plus proxy.remoteurl.
    base.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(base / "storage")},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "health": {"storagedriver": {"enabled": False}},
        "proxy": {"remoteurl": direct.url},
    }
    config_path = base / "config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    with open(base / "registry.log", "ab") as log:
        proc = subprocess.Popen([require_binary("docker-registry"), "serve", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Target(name, f"http://127.0.0.1:{port}", "", proc.pid, lambda: _reap(proc))


def _start_proxy(spec: TargetSpec, base: Path, direct: Upstream, port: int) -> Target:
    config = {
        **spec.proxy_config,
        "listen": f"127.0.0.1:{port}",
        "registries": [{"address": PROXY_ADDRESS, "endpoint": direct.url}],
    }
    env: dict[str, str] = dict(spec.env)
    launcher: tuple[str, ...] = ()
    if spec.source_dir is not None:
        # `python -m` puts the working directory first on sys.path, ahead of
        # PYTHONPATH, and the proxy is started from this checkout: run it from
        # the other one instead.
        env["PYTHONPATH"] = str(spec.source_dir)
        launcher = ("env", f"--chdir={spec.source_dir}", "--")
    if spec.uvloop:
        launcher = (*launcher, sys.executable, str(Path(__file__).with_name("uvloop_launcher.py")))
    proxy: ProxyProcess = start_proxy(base, config, env=env, launcher=launcher)
    if spec.source_dir is not None:
        cwd = Path(f"/proc/{proxy.pid}/cwd").resolve()
        if cwd != spec.source_dir.resolve():
            proxy.stop()
            raise RuntimeError(f"{spec.name} runs in {cwd}, not in {spec.source_dir}")
    return Target(spec.name, proxy.url, f"{PROXY_ADDRESS}/", proxy.pid, proxy.stop)


def proxy_module_file(source_dir: Path) -> str:
    """Where `python -m proxy` run from `source_dir` imports the package from."""
    done = subprocess.run([sys.executable, "-c", "import proxy; print(proxy.__file__)"], cwd=source_dir,
                          env={"PYTHONPATH": str(source_dir), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _FirstAnswer:
    """Polls a URL from a thread, from before the server is spawned until it answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.t0 = 0.0
        self._answered_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _FirstAnswer:
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self, *, started: float, timeout: float = 30) -> float:
        self._thread.join(timeout)
        if self._answered_at is None:
            raise RuntimeError(f"{self.url} did not answer within {timeout} s")
        return self._answered_at - started

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    pass
            except urllib.error.HTTPError as exc:
                exc.close()
            except OSError:
                time.sleep(_POLL_S)
                continue
            self._answered_at = time.perf_counter()
            return
