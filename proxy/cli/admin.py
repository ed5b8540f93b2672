"""The admin commands: their parsers, and running one against the admin API.

A failure is one line, ``registry-proxy: <message> (field: <field>)``, with
exit status 1, or 2 when the command line itself is at fault, as argparse
has it; ^C is status 130. With ``--json`` the line is the admin API's error
object, ``{"error": {"code", "message", "field", "status"}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from proxy.cli.cache import add_cache_parser
from proxy.cli.client import DEFAULT_URL, URL_ENV, AdminClient, AdminError, resolve_token
from proxy.cli.environments import add_environments_parser
from proxy.cli.keys import add_keys_parser
from proxy.cli.parsing import Actions, Handler, common_options
from proxy.cli.registries import add_registries_parser
from proxy.cli.settings_cmd import add_settings_parser
from proxy.cli.upstreams import add_upstreams_parser

__all__ = ["add_admin_parsers", "run_admin"]


def add_admin_parsers(sub: Actions) -> None:
    common = common_options()
    add_registries_parser(sub, common)
    add_environments_parser(sub, common)
    add_keys_parser(sub, common)
    add_settings_parser(sub, common)
    add_upstreams_parser(sub, common)
    add_cache_parser(sub, common)


def run_admin(args: argparse.Namespace, *, prog: str) -> int:
    """Run the admin command ``args`` names; the exit status."""
    handler: Handler = args.handler
    try:
        token = resolve_token(args.token, args.token_file, os.environ)
        client = AdminClient(args.url or os.environ.get(URL_ENV) or DEFAULT_URL, token)
        handler(client, args)
    except AdminError as err:
        # With --json a script reads the failure as it reads answers; stdout stays for answers only.
        as_json = getattr(args, "json", False)
        print(json.dumps(err.as_json()) if as_json else f"{prog}: {err.line()}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
