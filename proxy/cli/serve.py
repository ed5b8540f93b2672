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
from proxy.config.settings import (
    DATA_DIR_ENV,
    KEY_FILE_ENV,
    LISTEN_ENV,
    STATE_URL_ENV,
    Settings,
    SettingsError,
    load_settings,
)
from proxy.store.admin_token import ADMIN_TOKEN_ENV, AdminTokenError
from proxy.store.crypto import KEY_ENV, SecretError

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.cli.parsing import Actions

__all__ = ["SERVER_COMMANDS", "add_server_parsers", "run_server_command"]

SERVER_COMMANDS = ("serve", "healthcheck")

log = logging.getLogger("proxy")

# A wildcard listen address, as this host reaches it.
_LOCAL = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


_SERVE_DESCRIPTION = """\
Run the pull-through proxy: the registry API (/v2/), the admin API (/api/v1),
the status page (/), /metrics, /healthz and /readyz. Without --config it runs
on embedded defaults; config/registry-proxy.yaml names every key with its
default. Flags win over environment variables, which win over the file."""

_SERVE_ENVIRONMENT = f"""\
environment variables:
  {LISTEN_ENV}  host:port to listen on, over the file's listen
  {DATA_DIR_ENV}  the data directory, over the file's data_dir
  {ADMIN_TOKEN_ENV}  the admin API token, over admin.token_file and
      <data_dir>/admin-token (generated on first start)
  {KEY_ENV}  the key that encrypts stored secrets (base64 of 32
      bytes), over any key file
  {KEY_FILE_ENV}  the key file when the config file names no
      secrets.key_file; default <data_dir>.key, beside the data directory
  {STATE_URL_ENV}  the PostgreSQL URL replicas share, over state.url
  PG*  libpq's variables (PGPASSWORD, PGSSLMODE, ...) for state.url
  AWS_*, GOOGLE_APPLICATION_CREDENTIALS  read by the cloud SDKs: for storage
      backend s3, and for ecr and gcr credentials configured without keys"""


def add_server_parsers(sub: Actions) -> None:
    serve = sub.add_parser("serve", help="run the proxy", description=_SERVE_DESCRIPTION, epilog=_SERVE_ENVIRONMENT,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
    host = _LOCAL.get(settings.listen_host, settings.listen_host)
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


def _status_line(settings: Settings, scheme: str, app: web.Application) -> str:
    """Where the status page is and where its token is: what a first start needs to be looked at."""
    from proxy.app import admin_token_origin

    host, port = settings.admin_listen or (settings.listen_host, settings.listen_port)
    url = f"{scheme}://{_joined(_LOCAL.get(host, host), port)}/"
    if settings.external_url and not settings.admin_listen:
        url = settings.external_url + "/"
    token = admin_token_origin(app)
    if settings.status_public:
        return f"status page at {url} (public; the admin API takes the token from {token})"
    return f"status page at {url} (any user name, the admin token from {token} as the password)"


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
    log.info("%s", _status_line(settings, scheme, runner.app))
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
