"""Small process and network helpers shared by the e2e fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import pytest

LOCALHOST = "127.0.0.1"

T = TypeVar("T")


def require_binary(name: str) -> str:
    """Return the path of `name`, or skip (fail under CI) when it is missing.

    CI must never silently skip the e2e suite because an install step broke,
    so a missing binary is an error there and only a skip on a dev machine.
    """
    path = shutil.which(name)
    if path is None:
        message = f"required binary {name!r} not found on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago.

    There is a small race until the server binds it; acceptable for tests and
    far simpler than passing listening sockets into Go or Python children.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """Last bytes of a log file, for failure messages."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<no log: {exc}>"
    return data[-max_bytes:].decode("utf-8", "replace")


def _proc_log(proc: subprocess.Popen[bytes] | None) -> Path | None:
    return getattr(proc, "log_path", None) if proc is not None else None


def wait_http(
    url: str,
    timeout: float = 15,
    *,
    ok: Collection[int] = (200, 401),
    ssl_ctx: ssl.SSLContext | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> int:
    """Poll `url` until it answers with a status in `ok`; return that status.

    If `proc` exits first the wait fails at once with the tail of its log
    (`log_path`, or a `log_path` attribute set on the Popen object) instead of
    burning the whole timeout on a server that crashed on its config.
    """
    assert url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")), url
    log_path = log_path or _proc_log(proc)
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    delay = 0.01
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path) if log_path else "<no log>"
            pytest.fail(f"process exited with {proc.returncode} before {url} was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=ssl_ctx) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (OSError, ssl.SSLError) as exc:
            status = -1
            last = repr(exc)
        if status in ok:
            return status
        if status != -1:
            last = f"status {status}"
        if time.monotonic() > deadline:
            tail = log_tail(log_path) if log_path else ""
            pytest.fail(f"{url} not ready after {timeout}s ({last})\n{tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def wait_until(condition: Callable[[], T], *, timeout: float = 10, what: str = "the condition") -> T:
    """Poll `condition` until it returns something truthy, and return that; fail naming `what` after `timeout`.

    The way to wait for something another process does: for the condition
    that proves it happened, never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return value


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate and reap; escalate to SIGKILL so teardown never hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (reaping avoids Popen's ResourceWarning)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def skopeo(*args: str, timeout: float = 120, text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run skopeo with the signature policy disabled; never raises on rc != 0.

    `--insecure-policy` is a global flag, so it has to precede the subcommand;
    without it skopeo wants /etc/containers/policy.json, which CI may lack.
    `text=False` keeps stdout as bytes (needed for `inspect --raw`, where the
    exact manifest bytes matter).
    """
    binary = require_binary("skopeo")
    return subprocess.run(
        [binary, "--insecure-policy", *args],
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def skopeo_ok(*args: str, timeout: float = 120, text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Like `skopeo` but raise AssertionError (with stderr) on failure."""
    result = skopeo(*args, timeout=timeout, text=text)
    if result.returncode != 0:
        stderr = result.stderr if text else result.stderr.decode("utf-8", "replace")
        raise AssertionError(f"skopeo {' '.join(args)} failed ({result.returncode}):\n{stderr}")
    return result


# Safety net: children a test forgot to stop must not outlive pytest (they
# would keep ports and, in CI, the job's process group alive).
_LIVE: set[subprocess.Popen[bytes]] = set()


def spawn(
    argv: list[str], log_path: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child with stdout+stderr appended to `log_path` (kept across restarts)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env
        )
    proc.log_path = log_path  # type: ignore[attr-defined]  # read by wait_http on failure
    _LIVE.add(proc)
    return proc


def reap(proc: subprocess.Popen[bytes], *, kill: bool = False, timeout: float = 10) -> None:
    """Stop (SIGTERM, or SIGKILL with kill=True) and forget a spawned child."""
    if kill:
        kill_process(proc)
    else:
        stop_process(proc, timeout)
    _LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        kill_process(proc)
    _LIVE.clear()
