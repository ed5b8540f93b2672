"""Run the product (`python -m proxy serve --config FILE`) as a real subprocess.

A subprocess, not an in-process app, because the e2e tests check what only a
real process shows: restarts over the same data dir, SIGKILL mid-download,
and resident memory while streaming large blobs.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .tools import free_port, reap, spawn, wait_http

REPO_ROOT = Path(__file__).resolve().parents[2]



class ProxyProcess:
    """One proxy child process; restartable on the same port, config and data."""

    def __init__(self, base: Path, config_path: Path, port: int, env: dict[str, str],
                 launcher: tuple[str, ...] = ()) -> None:
        self.base = base
        self.config_path = config_path
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.tls = "tls" in self.config
        self.url = f"{'https' if self.tls else 'http'}://{self.host}"
        self.log_path = base / "proxy.log"
        self._env = env
        # Put before the command, e.g. ("prlimit", "--nofile=1024:1024", "--"); it must exec the proxy.
        self._launcher = launcher
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        return loaded

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    @property
    def pid(self) -> int:
        assert self._proc is not None, "proxy is not running"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 20) -> None:
        if self.running:
            return
        argv = [*self._launcher, sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path)]
        self._proc = spawn(argv, self.log_path, cwd=REPO_ROOT, env=self._env)
        try:
            wait_http(f"{self.url}/healthz", timeout, ok=(200,), proc=self._proc, ssl_ctx=_unverified() if self.tls else None)
        except BaseException:
            self.kill()  # a proxy that never got ready must not outlive the test
            raise

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait (SIGKILL after `timeout`); returns the exit code."""
        if self._proc is None:
            return None
        proc, self._proc = self._proc, None
        reap(proc, timeout=timeout)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash or OOM kill."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            reap(proc, kill=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _status_kb(self, field: str) -> int:
        # Linux only, like the product's deployment target; values are in kB.
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_kb(self) -> int:
        """Current resident set size."""
        return self._status_kb("VmRSS")

    def hwm_kb(self) -> int:
        """Peak resident set size since the process started."""
        return self._status_kb("VmHWM")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _unverified() -> ssl.SSLContext:
    # Readiness only: which certificate is served is for the tests to check.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# What the `make_proxy` fixture yields: make_proxy(config, *, env=None, name="proxy", launcher=()).
ProxyFactory = Callable[..., ProxyProcess]


def start_proxy(base: Path, config: dict[str, Any], *, env: dict[str, str] | None = None,
                launcher: tuple[str, ...] = ()) -> ProxyProcess:
    """Write `base/config.yaml` from `config` and start the proxy on a free port.

    `listen` and `data_dir` are filled in unless the config has them. `env`
    is added to (not substituted for) the current environment.
    """
    base.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    if "listen" not in config:
        config["listen"] = f"127.0.0.1:{free_port()}"
    config.setdefault("data_dir", str(base / "data"))
    listen = str(config["listen"])
    host, _, port = listen.rpartition(":")
    assert host == "127.0.0.1", f"e2e proxies must listen on 127.0.0.1 only, not {listen!r}"
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # Unbuffered so the log is complete when a test reads it after a kill.
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proxy = ProxyProcess(base, config_path, int(port), child_env, launcher)
    proxy.start()
    return proxy
