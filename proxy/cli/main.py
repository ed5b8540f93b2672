"""The ``registry-proxy`` command: its argument parser, assembled from the command modules, and dispatch.

``serve`` and ``healthcheck`` run the proxy (``proxy.cli.serve``) and
``secrets`` works on its data directory (``proxy.cli.secrets_cmd``); every
other command calls the admin API of a running one (``proxy.cli.admin``).
Each side loads only its own modules: nothing here imports the server, so
the admin commands start fast, and a serving process does not carry the
admin commands and their HTTP client in memory.
"""

from __future__ import annotations

import argparse
import sys

from proxy import __version__
from proxy.cli.secrets_cmd import SECRETS_COMMAND, add_secrets_parser, run_secrets_command
from proxy.cli.serve import SERVER_COMMANDS, add_server_parsers, run_server_command

__all__ = ["build_parser", "main"]

PROG = "registry-proxy"


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] and given[0] in (*SERVER_COMMANDS, SECRETS_COMMAND):
        return _run_local(_parser(admin=False).parse_args(given))
    parser = build_parser()
    args = parser.parse_args(given)
    if args.command in (*SERVER_COMMANDS, SECRETS_COMMAND):
        return _run_local(args)
    if args.command is None:
        parser.print_help()
        return 2
    from proxy.cli.admin import run_admin

    return run_admin(args, prog=PROG)


def _run_local(args: argparse.Namespace) -> int:
    """The commands that work on this machine's config and data directory, not through the admin API."""
    if args.command == SECRETS_COMMAND:
        return run_secrets_command(args)
    return run_server_command(args)


def build_parser() -> argparse.ArgumentParser:
    """Every command, as ``--help`` lists them."""
    return _parser(admin=True)


def _parser(*, admin: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pull-through proxy for container images.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command")
    add_server_parsers(sub)
    add_secrets_parser(sub)
    if admin:
        from proxy.cli.admin import add_admin_parsers

        add_admin_parsers(sub)
    return parser
