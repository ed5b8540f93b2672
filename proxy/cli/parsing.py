"""The parts every admin command's parser is built from: common options, leaf commands, argument types.

Every admin command takes the same ``--url``, ``--token-file``/``--token``
and ``--json``, and names its handler, which ``proxy.cli.main`` runs with a
client for the admin API. Argument types refuse what the API would refuse
anyway, so a typo fails with argparse's usage line (exit status 2) before a
secret is asked for or anything is sent.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeAlias

from proxy.cli.client import ADMIN_TOKEN_ENV, DEFAULT_URL, URL_ENV, AdminClient
from proxy.config.values import SettingsError, duration

__all__ = ["Actions", "Handler", "address", "address_argument", "common_options", "environment_argument",
           "environment_name", "id_argument", "leaf", "record_id", "seconds"]

Handler = Callable[[AdminClient, argparse.Namespace], None]
Actions: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def common_options() -> argparse.ArgumentParser:
    """The options every admin command takes, as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the proxy's URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    tokens = common.add_mutually_exclusive_group()
    tokens.add_argument("--token-file", metavar="PATH",
                        help="read the admin token from PATH, e.g. <data_dir>/admin-token")
    tokens.add_argument("--token", help=f"the admin token (default: ${ADMIN_TOKEN_ENV}); visible to other "
                        "users in the process list, so prefer --token-file or the variable")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    return common


def leaf(actions: Actions, name: str, common: argparse.ArgumentParser, handler: Handler, help: str, *,
         aliases: Sequence[str] = (), description: str | None = None) -> argparse.ArgumentParser:
    """An action of an admin command, e.g. ``list`` of ``registries``, that runs ``handler``."""
    parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=help, aliases=list(aliases),
                                                         description=description or help[0].upper() + help[1:] + ".")
    parser.set_defaults(handler=handler)
    return parser


def id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=record_id, help="the credential's id, from 'registries list'")


def record_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a credential id (a number from 'registries list')")
    return int(text)


def address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", metavar="ADDRESS", type=address,
                        help="registry host[:port] as in image names, no scheme, e.g. registry.example.com:5000")


def address(text: str) -> str:
    # An empty address would make the path /upstreams/, which only the router answers (404).
    if not text.strip():
        raise argparse.ArgumentTypeError("the registry address must not be empty")
    return text


def environment_argument(parser: argparse.ArgumentParser, metavar: str = "NAME") -> None:
    parser.add_argument("environment", metavar=metavar, type=environment_name,
                        help="the environment's name, from 'environments list'")


def environment_name(text: str) -> str:
    # Empty, the path would be /environments/: the list, or the router's 404.
    # Anything else the server checks, and names the field it refuses.
    if not text.strip():
        raise argparse.ArgumentTypeError("the environment name must not be empty")
    return text


def seconds(text: str) -> int | float:
    """A duration in seconds, read as the config file reads one: 90, 90s, 10m, 1h (and 1d)."""
    try:
        value = duration("--renew-margin", text)
    except SettingsError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (or 90s, 10m, 1h)") from None
    # Whole seconds go out as an integer, as they would be written in JSON by hand.
    return int(value) if value.is_integer() else value
