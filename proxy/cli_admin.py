"""Command line for the admin API: ``registry-proxy registries ...`` and ``registry-proxy settings ...``.

``registry-proxy upstreams ...`` and ``registries fetch-ca`` live in
``proxy.cli_upstreams``, on the parser and output helpers of this module.

Passwords are never command-line arguments, where ``ps`` and shell history
would show them: they come from stdin (``--password-stdin``) or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy.admin_client import ADMIN_TOKEN_ENV, DEFAULT_URL, URL_ENV, AdminClient, AdminError, UsageError, resolve_token

__all__ = ["ADMIN_COMMANDS", "add_admin_parsers", "run_admin"]

ADMIN_COMMANDS = ("registries", "settings", "upstreams")
PROG = "registry-proxy"

Handler = Callable[[AdminClient, argparse.Namespace], None]

_REGISTRY_COLUMNS = ("ID", "ADDRESS", "USERNAME", "EMAIL", "STATE", "IN USE", "SOURCE", "CREATED")
_REGISTRY_FIELDS = ("id", "address", "username", "email", "state", "in use", "source", "created", "updated")
_SETTING_FIELDS = ("name", "value", "source", "updated")


def add_admin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Imported here: cli_upstreams imports this module's helpers, so a
    # top-level import would run it before they exist.
    from proxy.cli_upstreams import add_fetch_ca_parser, add_upstreams_parser

    common = _common_options()
    registries = sub.add_parser("registries", help="manage upstream registry credentials (admin API)",
                                description="Credentials the proxy uses for upstream registries. Several may "
                                "exist per address; the newest active one is in use.")
    actions = registries.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = _leaf(actions, "add", common, _add, "add a credential; it becomes the one in use for its address")
    add.add_argument("address", metavar="ADDRESS", help="registry host[:port], no scheme, e.g. quay.io")
    add.add_argument("--username", required=True, help="user name at the registry")
    add.add_argument("--email", help="contact e-mail stored with the credential")
    _password_option(add)

    _leaf(actions, "list", common, _list, "list credentials", aliases=["ls"])
    _id_argument(_leaf(actions, "show", common, _show, "show one credential"))

    edit = _leaf(actions, "edit", common, _edit, "change username or e-mail; the password must be given again",
                 description="Change a credential. The password is write-only, so every edit asks for it "
                             "again (it may be the same one).")
    _id_argument(edit)
    edit.add_argument("--username", help="new user name")
    edit.add_argument("--email", help="new e-mail ('' clears it)")
    edit.add_argument("--address", help="must equal the current address; to move a credential, add a new one")
    _password_option(edit)

    _id_argument(_leaf(actions, "activate", common, _activate, "use a credential again"))
    _id_argument(_leaf(actions, "deactivate", common, _deactivate, "stop using a credential at once"))
    _id_argument(_leaf(actions, "rm", common, _remove, "delete a credential and its stored password"))
    add_fetch_ca_parser(actions, common)

    settings = sub.add_parser("settings", help="show and change run-time settings (admin API)",
                              description="Run-time settings; a change applies to the next pull and outlives "
                              "restarts.")
    setting_actions = settings.add_subparsers(dest="action", metavar="ACTION", required=True)
    get = _leaf(setting_actions, "get", common, _get_settings, "show all settings, or one")
    get.add_argument("name", metavar="NAME", nargs="?", help="registry.default or registry.whitelist")
    set_ = _leaf(setting_actions, "set", common, _set_setting, "change a setting")
    set_.add_argument("name", metavar="NAME", help="registry.default or registry.whitelist")
    set_.add_argument("value", metavar="VALUE", help="the new value; for the whitelist comma-separated "
                      "addresses, '' for any registry")

    add_upstreams_parser(sub, common)


def run_admin(args: argparse.Namespace) -> int:
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


# Parsers


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the proxy's URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    tokens = common.add_mutually_exclusive_group()
    tokens.add_argument("--token-file", metavar="PATH",
                        help="read the admin token from PATH, e.g. <data_dir>/admin-token")
    tokens.add_argument("--token", help=f"the admin token (default: ${ADMIN_TOKEN_ENV}); visible to other "
                        "users in the process list, so prefer --token-file or the variable")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    return common


def _leaf(actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, common: argparse.ArgumentParser,
          handler: Handler, help: str, *, aliases: Sequence[str] = (),
          description: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=help, aliases=list(aliases),
                                                         description=description or help[0].upper() + help[1:] + ".")
    parser.set_defaults(handler=handler)
    return parser


def _id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=_record_id, help="the credential's id, from 'registries list'")


def _record_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a credential id (a number from 'registries list')")
    return int(text)


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin (one trailing newline is dropped) instead of asking")


# Handlers


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    password = _password(args, f"Password for {args.username} at {args.address}: ")
    record = client.add_registry(address=args.address, username=args.username, password=password, email=args.email)
    _print_registry(args, record)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_registries()
    if args.json:
        return _print_json(answer)
    rows = [[_text(r.get("id")), _text(r.get("address")), _text(r.get("username")), _text(r.get("email")),
             _text(r.get("state")), _yes_no(r.get("in_use")), _text(r.get("source")), _text(r.get("created"))]
            for r in _items(answer, "registries")]
    _print_table(_REGISTRY_COLUMNS, rows)


def _show(client: AdminClient, args: argparse.Namespace) -> None:
    _print_registry(args, client.show_registry(args.id))


def _edit(client: AdminClient, args: argparse.Namespace) -> None:
    # Fetched first so an unknown id fails before anyone types a password,
    # and the prompt can say which credential it is for.
    current = client.show_registry(args.id)
    username = args.username or current.get("username")
    password = _password(args, f"Password for {_text(username)} at {_text(current.get('address'))}: ")
    record = client.edit_registry(args.id, password=password, username=args.username, email=args.email,
                                  address=args.address)
    _print_registry(args, record)


def _activate(client: AdminClient, args: argparse.Namespace) -> None:
    _print_registry(args, client.set_active(args.id, True))


def _deactivate(client: AdminClient, args: argparse.Namespace) -> None:
    _print_registry(args, client.set_active(args.id, False))


def _remove(client: AdminClient, args: argparse.Namespace) -> None:
    client.delete_registry(args.id)
    if not args.json:  # the API answers 204 without a body, so --json prints nothing
        print(f"removed registry credential {args.id}")


def _get_settings(client: AdminClient, args: argparse.Namespace) -> None:
    if args.name is not None:
        return _print_setting(args, client.show_setting(args.name))
    answer = client.list_settings()
    if args.json:
        return _print_json(answer)
    rows = [[_text(s.get("name")), _text(s.get("value")), _text(s.get("source"))] for s in _items(answer, "settings")]
    _print_table(("NAME", "VALUE", "SOURCE"), rows)


def _set_setting(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.set_setting(args.name, args.value)
    for warning in answer.get("warnings") or ():
        print(f"warning: {_text(warning)}", file=sys.stderr)
    _print_setting(args, answer)


# Passwords


def _password(args: argparse.Namespace, prompt: str) -> str:
    if args.password_stdin:
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AdminError("the password on stdin is not UTF-8 text", field="password") from None
        # As docker login --password-stdin does: `echo secret |` works, and a
        # password may still end in other whitespace.
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise AdminError("the password read from stdin is empty", field="password")
        return password
    if not sys.stdin.isatty():
        raise UsageError("cannot ask for the password: stdin is not a terminal; pipe it in with --password-stdin")
    try:
        password = getpass.getpass(prompt)
        if not password:
            raise AdminError("the password must not be empty", field="password")
        if getpass.getpass("Repeat the password: ") != password:
            raise AdminError("the two passwords differ; nothing was changed", field="password")
    except EOFError:
        raise AdminError("no password given; nothing was changed", field="password") from None
    return password


# Output


def _print_registry(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        return _print_json(record)
    values = {**record, "in use": _yes_no(record.get("in_use"))}
    _print_fields([(key, _text(values.get(key))) for key in _REGISTRY_FIELDS])


def _print_setting(args: argparse.Namespace, setting: dict[str, Any]) -> None:
    if args.json:
        return _print_json(setting)
    _print_fields([(key, _text(setting.get(key))) for key in _SETTING_FIELDS])


def _print_json(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, indent=2))


def _print_table(headers: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _print_fields(pairs: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        print(f"{key + ':':<{width}} {value}")


def _items(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = answer.get(key)
    if not isinstance(items, list):
        raise AdminError(f"the proxy's answer has no {key!r} list; is it an older or newer registry-proxy?")
    return [item for item in items if isinstance(item, dict)]


def _yes_no(value: object) -> str:
    return "yes" if value is True else "no"


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    # Values come from the server and may have been typed by anyone with the
    # token; escape sequences must not reach the operator's terminal.
    return "".join(c if c.isprintable() else "?" for c in str(value))
