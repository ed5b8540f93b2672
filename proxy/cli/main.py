"""The ``registry-proxy`` command: its argument parser, assembled from the command modules, and dispatch.

``serve`` and ``healthcheck`` run the proxy (``proxy.cli.serve``); every
other command calls the admin API of a running one. An admin command's
failure is one line, ``registry-proxy: <message> (field: <field>)``, with
exit status 1, or 2 when the command line itself is at fault, as argparse
has it; ^C is status 130. Nothing here imports the server, so the admin
commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from proxy import __version__
from proxy.cli.cache import add_cache_parser
from proxy.cli.client import DEFAULT_URL, URL_ENV, AdminClient, AdminError, resolve_token
from proxy.cli.environments import add_environments_parser
from proxy.cli.keys import add_keys_parser
from proxy.cli.parsing import Handler, common_options
from proxy.cli.registries import add_registries_parser
from proxy.cli.serve import SERVER_COMMANDS, add_server_parsers, run_server_command
from proxy.cli.settings_cmd import add_settings_parser
from proxy.cli.upstreams import add_upstreams_parser

__all__ = ["build_parser", "main"]

PROG = "registry-proxy"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in SERVER_COMMANDS:
        return run_server_command(args)
    if args.command is None:
        parser.print_help()
        return 2
    return _run_admin(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pull-through proxy for container images.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command")
    add_server_parsers(sub)
    common = common_options()
    add_registries_parser(sub, common)
    add_environments_parser(sub, common)
    add_keys_parser(sub, common)
    add_settings_parser(sub, common)
    add_upstreams_parser(sub, common)
    add_cache_parser(sub, common)
    return parser


def _run_admin(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        token = resolve_token(args.token, args.token_file, os.environ)
        client = AdminClient(args.url or os.environ.get(URL_ENV) or DEFAULT_URL, token)
        handler(client, args)
    except AdminError as err:
        print(f"{PROG}: {err.line()}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
