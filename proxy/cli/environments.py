"""``registry-proxy environments ...``: tenants, each with registry credentials and pull keys of its own.

An environment's clients pull with its credentials and no one else's: they
log in with one of its pull keys (``proxy.cli.keys``), or pull anonymously
where it admits that, from anywhere or only from ``--anonymous-from``
networks. ``default`` always exists. Deleting an environment that still has
credentials or keys takes ``--force``, which deletes them with it.
"""

from __future__ import annotations

import argparse
from typing import Any

from proxy.cli.client import AdminClient, AdminError, UsageError
from proxy.cli.output import items_of, print_fields, print_json, print_table, text, yes_no
from proxy.cli.parsing import Actions, environment_argument, leaf
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT

__all__ = ["add_environments_parser"]

_ENVIRONMENT_COLUMNS = ("NAME", "ANONYMOUS PULL", "ANONYMOUS FROM", "REGISTRIES", "KEYS", "SOURCE", "CREATED")


def add_environments_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    environments = sub.add_parser("environments", help="manage environments (tenants) and whom they admit "
                                  "anonymously (admin API)",
                                  description="Environments (tenants): each has registry credentials and pull keys "
                                  "of its own, and its clients pull with those only.")
    actions = environments.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf(actions, "list", common, _list, "list environments", aliases=["ls"])
    environment_argument(leaf(actions, "show", common, _show, "show one environment"))

    add = leaf(actions, "add", common, _add, "create an environment",
               description="Create an environment. Its clients log in with its pull keys ('keys add'); with "
               "--anonymous-pull, clients without a key may pull with its credentials too.")
    environment_argument(add)
    _admission_options(add, new=True)

    set_ = leaf(actions, "set", common, _set, "change whom an environment admits anonymously",
                description="Change whom an environment admits anonymously. Only the options given change; its "
                "name cannot.")
    environment_argument(set_)
    _admission_options(set_, new=False)

    delete = leaf(actions, "delete", common, _delete, "delete an environment", aliases=["rm"],
                  description="Delete an environment. While it has registry credentials or pull keys it is kept, "
                  "unless --force deletes them with it. 'default' cannot be deleted.")
    environment_argument(delete)
    delete.add_argument("--force", action="store_true", help="delete its registry credentials and pull keys too")


def _admission_options(parser: argparse.ArgumentParser, *, new: bool) -> None:
    parser.add_argument("--anonymous-pull", action=argparse.BooleanOptionalAction, default=None,
                        help="whether clients without a pull key may pull, with the environment's credentials"
                        + (" (default: no)" if new else ""))
    networks = parser.add_mutually_exclusive_group()
    networks.add_argument("--anonymous-from", metavar="CIDR", nargs="+", action="extend",
                          help="admit anonymous pulls only from these networks, e.g. 10.0.0.0/8 fd00::/8 or "
                          "192.0.2.7; commas separate too" + (" (default: from anywhere)" if new else
                                                              "; replaces the list"))
    if not new:
        networks.add_argument("--no-anonymous-from", action="store_true",
                              help="admit anonymous pulls from anywhere again")


# Handlers


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_environments()
    if args.json:
        return print_json(answer)
    rows = [[text(e.get("name")), yes_no(e.get("anonymous_pull")), _admitted_from(e), text(e.get("registries")),
             text(e.get("keys")), text(e.get("source")), text(e.get("created"))]
            for e in items_of(answer, "environments")]
    print_table(_ENVIRONMENT_COLUMNS, rows)


def _show(client: AdminClient, args: argparse.Namespace) -> None:
    _print_environment(args, client.show_environment(args.environment))


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    networks = None if args.anonymous_from is None else _networks(args.anonymous_from)
    fields = {"anonymous_pull": args.anonymous_pull, "anonymous_from": networks}
    _print_environment(args, client.add_environment(args.environment, fields))


def _set(client: AdminClient, args: argparse.Namespace) -> None:
    changes: dict[str, bool | list[str]] = {}
    if args.anonymous_pull is not None:
        changes["anonymous_pull"] = args.anonymous_pull
    if args.anonymous_from is not None:
        changes["anonymous_from"] = _networks(args.anonymous_from)
    elif args.no_anonymous_from:
        changes["anonymous_from"] = []
    if not changes:
        raise UsageError("nothing to change: give --anonymous-pull or --no-anonymous-pull, --anonymous-from "
                         "CIDR ..., or --no-anonymous-from")
    _print_environment(args, client.change_environment(args.environment, changes))


def _delete(client: AdminClient, args: argparse.Namespace) -> None:
    # Fetched first to count what goes with it: the refusal then names this
    # command's --force rather than the API's ?force=true, and --force says
    # what it deleted. The server refuses default and config-declared ones itself.
    current = client.show_environment(args.environment)
    held = _holdings(current)
    deletable = args.environment != DEFAULT_ENVIRONMENT and current.get("source") != "config"
    if held and deletable and not args.force:
        raise AdminError(f"environment {text(args.environment)!r} still has {held}: remove them first, or pass "
                         "--force to delete them with it", field="name")
    client.delete_environment(args.environment, force=args.force)
    if not args.json:  # 204 without a body: --json prints nothing
        print(f"deleted environment {text(args.environment)}" + (f" with its {held}" if held else ""))


def _networks(values: list[str]) -> list[str]:
    # An empty entry is sent as it is, for the server to refuse by name.
    return [part.strip() for value in values for part in value.split(",")]


# Output


def _print_environment(args: argparse.Namespace, environment: dict[str, Any]) -> None:
    if args.json:
        return print_json(environment)
    print_fields([("name", text(environment.get("name"))),
                  ("anonymous pull", yes_no(environment.get("anonymous_pull"))),
                  ("anonymous from", _admitted_from(environment)),
                  ("registries", text(environment.get("registries"))), ("keys", text(environment.get("keys"))),
                  ("source", text(environment.get("source"))), ("created", text(environment.get("created"))),
                  ("updated", text(environment.get("updated")))])


def _admitted_from(environment: dict[str, Any]) -> str:
    networks = environment.get("anonymous_from")
    if isinstance(networks, list) and networks:
        return ", ".join(text(n) for n in networks)
    # No networks means no limit, which matters only where anonymous pulls are on.
    return "anywhere" if environment.get("anonymous_pull") is True else "-"


def _holdings(environment: dict[str, Any]) -> str:
    """ "2 registry credentials and 1 pull key", or "" when it has neither."""
    parts = []
    for key, one in (("registries", "registry credential"), ("keys", "pull key")):
        count = environment.get(key)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            parts.append(f"{count} {one}" + ("s" if count > 1 else ""))
    return " and ".join(parts)
