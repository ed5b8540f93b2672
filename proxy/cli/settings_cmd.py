"""``registry-proxy settings ...``: show and change run-time settings through the admin API.

The settings are ``registry.default`` and ``registry.whitelist``; a change
applies to the next pull and outlives restarts, ``unset`` goes back to the
config file's value or the default, and each shows where its value comes
from. The server knows the names and checks the values, so
nothing is checked twice here; its warnings go to stderr, keeping stdout
for the answer. (Named ``settings_cmd`` so as not to be taken for
``proxy.config.settings``, the proxy's own configuration.)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.cli.client import AdminClient
from proxy.cli.output import items_of, print_fields, print_json, print_table, text
from proxy.cli.parsing import Actions, leaf

__all__ = ["add_settings_parser"]

_SETTING_FIELDS = ("name", "value", "source", "updated")


def add_settings_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    settings = sub.add_parser("settings", help="show and change run-time settings (admin API)",
                              description="Run-time settings; a change applies to the next pull and outlives "
                              "restarts.")
    actions = settings.add_subparsers(dest="action", metavar="ACTION", required=True)
    get = leaf(actions, "get", common, _get, "show all settings, or one")
    get.add_argument("name", metavar="NAME", nargs="?", help="registry.default or registry.whitelist")
    set_ = leaf(actions, "set", common, _set, "change a setting")
    set_.add_argument("name", metavar="NAME", help="registry.default or registry.whitelist")
    set_.add_argument("value", metavar="VALUE", help="the new value; for the whitelist comma-separated "
                      "addresses, '' for any registry")
    unset = leaf(actions, "unset", common, _unset, "forget a value set here: back to the config file's value, or "
                 "the default")
    unset.add_argument("name", metavar="NAME", help="registry.default or registry.whitelist")


def _get(client: AdminClient, args: argparse.Namespace) -> None:
    if args.name is not None:
        return _print_setting(args, client.show_setting(args.name))
    answer = client.list_settings()
    if args.json:
        return print_json(answer)
    rows = [[text(s.get("name")), text(s.get("value")), text(s.get("source"))] for s in items_of(answer, "settings")]
    print_table(("NAME", "VALUE", "SOURCE"), rows)


def _set(client: AdminClient, args: argparse.Namespace) -> None:
    _print_changed(args, client.set_setting(args.name, args.value))


def _unset(client: AdminClient, args: argparse.Namespace) -> None:
    _print_changed(args, client.unset_setting(args.name))


def _print_changed(args: argparse.Namespace, answer: dict[str, Any]) -> None:
    for warning in answer.get("warnings") or ():
        print(f"warning: {text(warning)}", file=sys.stderr)
    _print_setting(args, answer)


def _print_setting(args: argparse.Namespace, setting: dict[str, Any]) -> None:
    if args.json:
        return print_json(setting)
    print_fields([(key, text(setting.get(key))) for key in _SETTING_FIELDS])
