"""``registry-proxy registries ...``: the credentials the proxy uses for upstream registries.

Several credentials may exist per address and environment; the newest
active one is the one that environment's clients pull with. Three kinds:
``basic`` (username and password, the default), ``ecr`` and ``gcr``, for
which the proxy mints registry passwords itself. Secrets are
never command-line arguments and never printed: ``proxy.cli.kinds`` reads
them, and the API never answers with one, so nothing here can print one.
What a minted credential shows instead is when and how its token was minted.

``registries fetch-ca`` lives in ``proxy.cli.fetch_ca``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from proxy.cli.client import AdminClient, AdminError, UsageError
from proxy.cli.fetch_ca import add_fetch_ca_parser
from proxy.cli.kinds import check_kind_flags, kind_options, minted_fields, password
from proxy.cli.output import items_of, parse_time, print_fields, print_json, print_table, text, yes_no
from proxy.cli.parsing import Actions, environment_name, id_argument, leaf
from proxy.credentials.kinds import KINDS
from proxy.humanize import ago, human_duration, until

__all__ = ["add_registries_parser"]

_REGISTRY_COLUMNS = ("ID", "ADDRESS", "ENVIRONMENT", "KIND", "USERNAME", "EMAIL", "STATE", "IN USE", "SOURCE",
                     "CREATED")
_REGISTRY_FIELDS = ("id", "address", "environment", "kind", "username", "email", "state", "in use", "source",
                    "created", "updated")
# Shown under the common fields for credentials the proxy mints passwords for.
_MINTED_FIELDS = {"ecr": ("access_key_id", "role_arn", "aws_endpoint_url", "renew_margin"),
                  "gcr": ("mode", "client_email", "renew_margin")}
# What an unset field means, so "-" is not the whole story.
_UNSET_MEANS = {("ecr", "access_key_id"): "default AWS credential chain",
                ("gcr", "client_email"): "Application Default Credentials",
                ("ecr", "renew_margin"): "last quarter of the token's lifetime",
                ("gcr", "renew_margin"): "last quarter of the token's lifetime"}


def add_registries_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    registries = sub.add_parser("registries", help="manage upstream registry credentials (admin API)",
                                description="Credentials the proxy uses for upstream registries. Several may "
                                "exist per address and environment; the newest active one is in use for that "
                                "environment's clients.")
    actions = registries.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = leaf(actions, "add", common, _add, "add a credential; it becomes the one in use for its address",
               description="Add a credential; it becomes the one in use for its address. --kind basic (the "
                           "default) takes a username and password; ecr and gcr credentials let the proxy mint "
                           "registry passwords itself and renew them before they expire.")
    add.add_argument("address", metavar="ADDRESS", help="registry host[:port], no scheme, e.g. quay.io, "
                     "123456789012.dkr.ecr.eu-west-1.amazonaws.com or europe-west1-docker.pkg.dev")
    add.add_argument("--kind", choices=KINDS, default="basic", help="basic (default): username and password; "
                     "ecr: AWS ECR; gcr: Google Container/Artifact Registry")
    add.add_argument("--email", help="contact e-mail stored with the credential")
    add.add_argument("--environment", metavar="NAME", type=environment_name,
                     help="the environment whose clients pull with it (default: default)")
    kind_options(add, new=True)

    list_ = leaf(actions, "list", common, _list, "list credentials", aliases=["ls"])
    list_.add_argument("--environment", metavar="NAME", type=environment_name,
                       help="only the credentials of this environment")
    id_argument(leaf(actions, "show", common, _show, "show one credential"))

    edit = leaf(actions, "edit", common, _edit, "change a credential; its secret must be given again",
                description="Change a credential; fields not given stay as they are. Secrets are write-only, "
                            "so every edit sends the credential's secret again (it may be the same one): the "
                            "password, an ecr credential's secret access key, a gcr credential's JSON key. "
                            "The kind cannot change.")
    id_argument(edit)
    edit.add_argument("--email", help="new e-mail ('' clears it)")
    edit.add_argument("--address", help="must equal the current address; to move a credential, add a new one")
    kind_options(edit, new=False)

    id_argument(leaf(actions, "activate", common, _activate, "use a credential again"))
    id_argument(leaf(actions, "deactivate", common, _deactivate, "stop using a credential at once"))
    id_argument(leaf(actions, "rm", common, _remove, "delete a credential and its stored password"))
    add_fetch_ca_parser(actions, common)


# Handlers


def _add(client: AdminClient, args: argparse.Namespace) -> None:
    kind: str = args.kind
    check_kind_flags(args, kind, f"--kind {kind}")
    if args.environment is not None:
        _check_environment(client, args.environment)  # before anyone types a secret
    fields: dict[str, str | int | float | None] = {"email": args.email, "environment": args.environment}
    if kind == "basic":
        if args.username is None:
            raise UsageError("--username is required for --kind basic (the default); for ECR or Google "
                             "registries pass --kind ecr or --kind gcr", field="username")
        secret = password(args, f"Password for {args.username} at {args.address}: ")
        fields.update(username=args.username, password=secret)
        secrets: tuple[str, ...] = (secret,)
    else:
        # Left out, the server would take the credential for a basic one.
        fields["kind"] = kind
        secrets = minted_fields(args, kind, fields, had_secret=False, whose=f"at {args.address}")
    record = client.add_registry(args.address, fields, secrets=secrets)
    _print_registry(args, record)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_registries(args.environment)
    if args.environment is not None and not answer.get("registries"):
        # The API lists nothing for a name it does not know; a typo must not look like an empty environment.
        _check_environment(client, args.environment)
    if args.json:
        return print_json(answer)
    rows = [[text(r.get("id")), text(r.get("address")), text(r.get("environment")), text(r.get("kind")),
             text(r.get("username")), text(r.get("email")), text(r.get("state")), yes_no(r.get("in_use")),
             text(r.get("source")), text(r.get("created"))]
            for r in items_of(answer, "registries")]
    print_table(_REGISTRY_COLUMNS, rows)


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
        secret = password(args, f"Password for {text(username)} at {text(current.get('address'))}: ")
        fields.update(username=args.username, password=secret)
        secrets: tuple[str, ...] = (secret,)
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


def _check_environment(client: AdminClient, name: str) -> None:
    try:
        client.show_environment(name)
    except AdminError as err:
        if err.status != 404:
            raise
        raise AdminError(f"no environment {text(name)!r}: create it first with 'environments add'",
                         field="environment") from None


# Output


def _print_registry(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        return print_json(record)
    values = {**record, "in use": yes_no(record.get("in_use"))}
    pairs = [(key, text(values.get(key))) for key in _REGISTRY_FIELDS]
    kind = record.get("kind")
    if isinstance(kind, str) and kind in _MINTED_FIELDS:
        for key in _MINTED_FIELDS[kind]:
            value = record.get(key)
            if value is None or value == "":
                shown = text(None) + (f" ({_UNSET_MEANS[kind, key]})" if (kind, key) in _UNSET_MEANS else "")
            elif key == "renew_margin":
                shown = _margin(value)
            else:
                shown = text(value)
            pairs.append((key, shown))
        pairs.extend(_token_fields(record.get("token")))
    print_fields(pairs)


def _token_fields(token: object) -> list[tuple[str, str]]:
    # When and how the proxy minted the registry password; the API never
    # sends the password itself.
    if not isinstance(token, dict):
        return [("token", "not minted yet")]
    failures = token.get("failures")
    minted = bool(token.get("minted_at"))
    return [
        ("minted_at", _when(token.get("minted_at"), "never", ago)),
        # until() says "... ago (expired)": the token no longer works. Without
        # an expiry (gcr json_key mode) the proxy re-mints after a while anyway.
        ("expires_at", _when(token.get("expires_at"), "no expiry given" if minted else "not minted yet", until)),
        # A refresh in the past is one the next pull starts.
        ("next_refresh", _when(token.get("next_refresh"), "none planned" if minted else "at the first pull",
                               lambda _: "due")),
        ("last_result", text(token.get("last_result"))),
        ("failures", f"{failures} in a row" if isinstance(failures, int) and failures > 0 else text(failures)),
        ("mints", text(token.get("mints"))),
    ]


def _when(value: object, unset: str, past: Callable[[float], str]) -> str:
    """An API timestamp and how far away it is: "2026-11-27T20:54:09Z (in 11 h 59 min)"."""
    if not isinstance(value, str) or not value:
        return f"- ({unset})"
    moment = parse_time(value)
    if moment is None:
        return text(value)
    stamp = moment.timestamp()
    return f"{text(value)} ({until(stamp) if stamp >= time.time() else past(stamp)})"


def _margin(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    seconds = f"{value:g} s"
    return seconds if value < 60 else f"{seconds} ({human_duration(value)})"
