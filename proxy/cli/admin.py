"""Command line for the admin API: ``registry-proxy registries ...`` and ``registry-proxy settings ...``.

``registry-proxy upstreams ...`` and ``registries fetch-ca`` live in
``proxy.cli.upstreams``, on the parser and output helpers of this module.

Secrets are never command-line arguments, where ``ps`` and shell history
would show them: a password or an AWS secret access key comes from stdin
(``--password-stdin``, ``--secret-access-key-stdin``) or a prompt, a Google
service-account key from a file or stdin. The API never answers with one, so
nothing here can print one.

Three kinds of credential: ``basic`` (username and password, the default),
``ecr`` and ``gcr``, for which the proxy mints registry passwords itself.
Flags of another kind than the credential's are refused here, before any
secret is read, naming the API field they would have set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy.cli.client import ADMIN_TOKEN_ENV, DEFAULT_URL, URL_ENV, AdminClient, AdminError, UsageError, resolve_token
from proxy.cli.kinds import check_kind_flags, kind_options, margin, minted_fields, read_secret, text, token_fields
from proxy.credentials.kinds import KINDS

__all__ = ["ADMIN_COMMANDS", "add_admin_parsers", "run_admin"]

ADMIN_COMMANDS = ("registries", "settings", "upstreams")
PROG = "registry-proxy"

Handler = Callable[[AdminClient, argparse.Namespace], None]

_REGISTRY_COLUMNS = ("ID", "ADDRESS", "KIND", "USERNAME", "EMAIL", "STATE", "IN USE", "SOURCE", "CREATED")
_REGISTRY_FIELDS = ("id", "address", "kind", "username", "email", "state", "in use", "source", "created", "updated")
# Shown under the common fields for credentials the proxy mints passwords for.
_MINTED_FIELDS = {"ecr": ("access_key_id", "role_arn", "aws_endpoint_url", "renew_margin"),
                  "gcr": ("mode", "client_email", "renew_margin")}
# What an unset field means, so "-" is not the whole story.
_UNSET_MEANS = {("ecr", "access_key_id"): "default AWS credential chain",
                ("gcr", "client_email"): "Application Default Credentials",
                ("ecr", "renew_margin"): "last quarter of the token's lifetime",
                ("gcr", "renew_margin"): "last quarter of the token's lifetime"}
# A Google service-account key is a few KiB; the API takes at most 1 MiB per body.
MAX_KEY_FILE = 256 * 1024
_SETTING_FIELDS = ("name", "value", "source", "updated")


def add_admin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Imported here: cli_upstreams imports this module's helpers, so a
    # top-level import would run it before they exist.
    from proxy.cli.upstreams import add_fetch_ca_parser, add_upstreams_parser

    common = _common_options()
    registries = sub.add_parser("registries", help="manage upstream registry credentials (admin API)",
                                description="Credentials the proxy uses for upstream registries. Several may "
                                "exist per address; the newest active one is in use.")
    actions = registries.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = _leaf(actions, "add", common, _add, "add a credential; it becomes the one in use for its address",
                description="Add a credential; it becomes the one in use for its address. --kind basic (the "
                            "default) takes a username and password; ecr and gcr credentials let the proxy mint "
                            "registry passwords itself and renew them before they expire.")
    add.add_argument("address", metavar="ADDRESS", help="registry host[:port], no scheme, e.g. quay.io, "
                     "123456789012.dkr.ecr.eu-west-1.amazonaws.com or europe-west1-docker.pkg.dev")
    add.add_argument("--kind", choices=KINDS, default="basic", help="basic (default): username and password; "
                     "ecr: AWS ECR; gcr: Google Container/Artifact Registry")
    add.add_argument("--email", help="contact e-mail stored with the credential")
    kind_options(add, new=True)

    _leaf(actions, "list", common, _list, "list credentials", aliases=["ls"])
    _id_argument(_leaf(actions, "show", common, _show, "show one credential"))

    edit = _leaf(actions, "edit", common, _edit, "change a credential; its secret must be given again",
                 description="Change a credential; fields not given stay as they are. Secrets are write-only, "
                             "so every edit sends the credential's secret again (it may be the same one): the "
                             "password, an ecr credential's secret access key, a gcr credential's JSON key. "
                             "The kind cannot change.")
    _id_argument(edit)
    edit.add_argument("--email", help="new e-mail ('' clears it)")
    edit.add_argument("--address", help="must equal the current address; to move a credential, add a new one")
    kind_options(edit, new=False)

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


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    kind: str = args.kind
    check_kind_flags(args, kind, f"--kind {kind}")
    fields: dict[str, str | int | float | None] = {"email": args.email}
    if kind == "basic":
        if args.username is None:
            raise UsageError("--username is required for --kind basic (the default); for ECR or Google "
                             "registries pass --kind ecr or --kind gcr", field="username")
        password = _password(args, f"Password for {args.username} at {args.address}: ")
        fields.update(username=args.username, password=password)
        secrets: tuple[str, ...] = (password,)
    else:
        # Left out, the server would take the credential for a basic one.
        fields["kind"] = kind
        secrets = minted_fields(args, kind, fields, had_secret=False, whose=f"at {args.address}")
    record = client.add_registry(args.address, fields, secrets=secrets)
    _print_registry(args, record)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_registries()
    if args.json:
        return _print_json(answer)
    rows = [[text(r.get("id")), text(r.get("address")), text(r.get("kind")), text(r.get("username")),
             text(r.get("email")), text(r.get("state")), _yes_no(r.get("in_use")), text(r.get("source")),
             text(r.get("created"))]
            for r in _items(answer, "registries")]
    _print_table(_REGISTRY_COLUMNS, rows)


def _show(client: AdminClient, args: argparse.Namespace) -> None:
    _print_registry(args, client.show_registry(args.id))


def _edit(client: AdminClient, args: argparse.Namespace) -> None:
    # Fetched first so an unknown id fails before anyone types a secret, the
    # kind's flags can be checked, and the prompt can say what it is for.
    current = client.show_registry(args.id)
    kind = current.get("kind") or "basic"  # a proxy from before kinds has basic ones only
    if kind not in KINDS:
        raise AdminError(f"credential {args.id} is of kind {text(kind)!r}, which this registry-proxy does not "
                         "know; is the proxy newer than this command?", field="kind")
    check_kind_flags(args, kind, f"credential {args.id}, which is of kind {kind}")
    fields: dict[str, str | int | float | None] = {"email": args.email, "address": args.address}
    if kind == "basic":
        username = args.username or current.get("username")
        password = _password(args, f"Password for {text(username)} at {text(current.get('address'))}: ")
        fields.update(username=args.username, password=password)
        secrets: tuple[str, ...] = (password,)
    else:
        # The view says whether a secret is stored only through the field that
        # comes with it: an access key id, or the key's client_email.
        had_secret = bool(current.get("access_key_id" if kind == "ecr" else "client_email"))
        secrets = minted_fields(args, kind, fields, had_secret=had_secret,
                                 whose=f"for credential {args.id} at {text(current.get('address'))}")
    record = client.edit_registry(args.id, fields, secrets=secrets)
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
    rows = [[text(s.get("name")), text(s.get("value")), text(s.get("source"))] for s in _items(answer, "settings")]
    _print_table(("NAME", "VALUE", "SOURCE"), rows)


def _set_setting(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.set_setting(args.name, args.value)
    for warning in answer.get("warnings") or ():
        print(f"warning: {text(warning)}", file=sys.stderr)
    _print_setting(args, answer)


# Secrets


def _password(args: argparse.Namespace, prompt: str) -> str:
    return read_secret(args.password_stdin, "password", "password", "--password-stdin", prompt)


def _print_registry(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        return _print_json(record)
    values = {**record, "in use": _yes_no(record.get("in_use"))}
    pairs = [(key, text(values.get(key))) for key in _REGISTRY_FIELDS]
    kind = record.get("kind")
    if isinstance(kind, str) and kind in _MINTED_FIELDS:
        for key in _MINTED_FIELDS[kind]:
            value = record.get(key)
            if value is None or value == "":
                shown = text(None) + (f" ({_UNSET_MEANS[kind, key]})" if (kind, key) in _UNSET_MEANS else "")
            elif key == "renew_margin":
                shown = margin(value)
            else:
                shown = text(value)
            pairs.append((key, shown))
        pairs.extend(token_fields(record.get("token")))
    _print_fields(pairs)


def _print_setting(args: argparse.Namespace, setting: dict[str, Any]) -> None:
    if args.json:
        return _print_json(setting)
    _print_fields([(key, text(setting.get(key))) for key in _SETTING_FIELDS])


def _print_json(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, indent=2))


def _print_table(headers: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    for row in [list(headers), *rows]:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


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

