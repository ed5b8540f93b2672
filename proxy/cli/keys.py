"""``registry-proxy keys ...``: the pull keys an environment's clients log in with.

A client logs in to the proxy with a key's id as user name and its secret
as password, and pulls with its environment's credentials. The proxy makes
the secret up and keeps only a hash of it: the answer to ``keys add`` is the
one place it appears, so that command prints it, and with ``--json`` prints
the answer as it came for a script to store. Nothing else here can print
one. A revoked key, and every token issued for it, stops working at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.cli.client import AdminClient
from proxy.cli.output import items_of, print_fields, print_json, print_table, text
from proxy.cli.parsing import Actions, environment_argument, leaf

__all__ = ["add_keys_parser"]

_KEY_COLUMNS = ("ID", "SOURCE", "CREATED", "LAST USED")
_KEY_FIELDS = ("id", "environment", "source", "created", "last used")


def add_keys_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="manage the pull keys clients log in with (admin API)",
                          description="Pull keys: a client logs in to the proxy with a key's id as user name and "
                          "its secret as password, and pulls with the credentials of the key's environment.")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    environment_argument(leaf(actions, "list", common, _list, "list an environment's pull keys, never their "
                              "secrets", aliases=["ls"]), "ENV")

    add = leaf(actions, "add", common, _add, "create a pull key and print its secret, once",
               description="Create a pull key and print its secret. The secret is shown this once and never "
               "again: store it now (--json prints it in the API's JSON, for scripts).")
    environment_argument(add, "ENV")
    add.add_argument("--id", help="the key's id, which clients log in with as user name: 3 to 64 letters, digits, "
                     "dots, dashes and underscores (default: one made up, pk-...)")

    revoke = leaf(actions, "revoke", common, _revoke, "revoke a pull key; clients using it are refused at once",
                  aliases=["rm"])
    environment_argument(revoke, "ENV")
    revoke.add_argument("id", metavar="ID", type=_key_id, help="the key's id, from 'keys list ENV'")


def _key_id(value: str) -> str:
    # Empty, the path would end in /keys/, which only the router answers.
    if not value.strip():
        raise argparse.ArgumentTypeError("the key id must not be empty")
    return value


# Handlers


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_keys(args.environment)
    if args.json:
        return print_json(answer)
    rows = [[text(k.get("id")), text(k.get("source")), text(k.get("created")), text(k.get("last_used"))]
            for k in items_of(answer, "keys")]
    print_table(_KEY_COLUMNS, rows)


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    key = client.add_key(args.environment, args.id)
    if args.json:
        print_json(key)
    else:
        _print_key(key)
    # On stderr, so stdout holds the answer alone, as a script captures it.
    print(f"note: this is the only time the secret of pull key {text(key.get('id'))} is shown; the proxy keeps "
          "only a hash of it. Clients log in with the id as user name and the secret as password.", file=sys.stderr)


def _revoke(client: AdminClient, args: argparse.Namespace) -> None:
    client.revoke_key(args.environment, args.id)
    if not args.json:  # 204 without a body: --json prints nothing
        print(f"revoked pull key {text(args.id)} of environment {text(args.environment)}")


# Output


def _print_key(key: dict[str, Any]) -> None:
    values = {**key, "last used": key.get("last_used")}
    print_fields([*((name, text(values.get(name))) for name in _KEY_FIELDS), ("secret", text(key.get("secret")))])
