"""``registry-proxy serve`` and ``registry-proxy healthcheck``: running the proxy, and asking it whether it runs.

Both read the same config (file, ``--listen``, ``--data-dir``), so the
healthcheck asks the port and scheme the server listens on. ``serve`` binds
its socket before the app starts, so a taken port fails with a config-style
one-line error before anything is created in the data directory. A config
problem is reported as ``registry-proxy: <message>`` with exit status 2.

The server itself (``proxy.app`` and aiohttp.web) is imported only when
``serve`` runs: the admin commands share this process's start-up and must
not pay for loading it.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from proxy import __version__
from proxy.cli.logs import setup_logging
from proxy.cli.resources import AcceptErrorLog, raise_open_file_limit
from proxy.cli.servertls import CertReloader
from proxy.config.settings import Settings, SettingsError, load_settings
from proxy.store.admin_token import AdminTokenError
from proxy.store.crypto import SecretError

if TYPE_CHECKING:
    from proxy.cli.parsing import Actions

__all__ = ["SERVER_COMMANDS", "add_server_parsers", "run_server_command"]

SERVER_COMMANDS = ("serve", "healthcheck")

log = logging.getLogger("proxy")


def add_server_parsers(sub: Actions) -> None:
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--listen", help="host:port to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--data-dir", help="where state and cache live (default ./data)")
    check = sub.add_parser("healthcheck", help="exit 0 if the proxy configured like this answers /healthz")
    for flag in ("--config", "--listen", "--data-dir"):
        check.add_argument(flag, help=f"as for serve {flag}")


def run_server_command(args: argparse.Namespace) -> int:
    """Run ``serve`` or ``healthcheck``; the exit status."""
    try:
        settings = load_settings(Path(args.config) if args.config else None,
                                 listen=args.listen, data_dir=args.data_dir)
    except SettingsError as exc:
        print(f"registry-proxy: {exc}", file=sys.stderr)
        return 2
    if args.command == "healthcheck":
        return _healthcheck(settings)
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except (SettingsError, SecretError, AdminTokenError) as exc:
        print(f"registry-proxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _healthcheck(settings: Settings) -> int:
    """For container HEALTHCHECKs: reads the same config as serve, so the port and scheme agree."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.listen_host, settings.listen_host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.tls else "http"
    # Whether the process answers, not which certificate it serves.
    context = ssl._create_unverified_context() if settings.tls else None
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{settings.listen_port}/healthz", timeout=4,
                                    context=context) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"registry-proxy: not healthy: {exc}", file=sys.stderr)
        return 1


def _bind(host: str, port: int, key: str) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise SettingsError(f"Config '{key}' has value '{_joined(host, port)}': {reason}") from None


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(settings: Settings) -> None:
    # Before binding, and before the connection limit is sized from it.
    files_before, files = raise_open_file_limit()
    AcceptErrorLog().install(asyncio.get_running_loop())
    # Bind before the app starts, so a taken port fails before anything is
    # created in the data directory.
    sock = _bind(settings.listen_host, settings.listen_port, "listen")
    admin_sock = None if settings.admin_listen is None else _bind(*settings.admin_listen, "admin.listen")
    reloader = None
    if settings.tls is not None:
        try:
            reloader = CertReloader(settings.tls.cert_file, settings.tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"Config 'tls.cert_file' has value '{settings.tls.cert_file}'. "
                                f"Cannot load it with tls.key_file: {exc}") from None
    # The server and aiohttp.web load only here, so the admin commands start
    # without them.
    from proxy.app import create_runner

    runner = create_runner(settings)
    await runner.setup()
    await runner.site(sock, ssl_context=reloader.context if reloader else None).start()
    scheme = "https" if reloader else "http"
    log.info("registry-proxy %s listening on %s://%s (data in %s; at most %d client connections)", __version__,
             scheme, settings.listen, settings.data_dir, runner.police.max_connections)
    log.info("open-file limit %d%s", files, f" (raised from {files_before})" if files != files_before else "")
    if admin_sock is not None and settings.admin_listen is not None:
        await runner.site(admin_sock, ssl_context=reloader.context if reloader else None).start()
        log.info("admin API, status page and /metrics on %s://%s", scheme, _joined(*settings.admin_listen))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if reloader is not None and settings.tls is not None:
        forced = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, forced.set)
        watcher = asyncio.create_task(reloader.watch(settings.tls.reload_interval, forced))
    else:
        # SIGHUP means "reload" to operators; without TLS there is nothing
        # to reload, and it must not kill the process.
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: nothing to reload without tls"))
    await stop.wait()
    log.info("shutting down")
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    await runner.cleanup()
