"""``registry-proxy upstreams ...``: how each registry is reached (endpoint, TLS trust, client certificate),
and the alias clients may name it by.

Only the options given change; a ``--no-...`` option clears its setting.
Certificate files are sent as their CERTIFICATE blocks only, so a key that
shares the file never leaves the machine with them. The client key is a
secret like a password: read from a file, sent once, scrubbed from errors,
never printed. The API answers ``client_key_set`` only.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.cli.certs import CERT_BLOCK, colons, expiry, pem_sha256
from proxy.cli.client import AdminClient, UsageError
from proxy.cli.output import items_of, parse_time, print_fields, print_json, print_table, text, yes_no
from proxy.cli.parsing import Actions, address_argument, leaf
from proxy.config.connection import certificates_only

__all__ = ["add_upstreams_parser"]

_UPSTREAM_COLUMNS = ("ADDRESS", "ALIAS", "ENDPOINT", "INSECURE", "CA CERTS", "CA EXPIRES", "CLIENT CERT", "SOURCE")
_KEY_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n.*?-----END \1PRIVATE KEY-----", re.DOTALL)


def add_upstreams_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    upstreams = sub.add_parser("upstreams", help="how each registry is reached: endpoint, TLS trust, client "
                               "certificate; its alias (admin API)",
                               description="How the proxy reaches each registry. A change applies to the next "
                               "pull and outlives restarts; registries set in the config file change there only.")
    actions = upstreams.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf(actions, "list", common, _list, "list the registries with an endpoint or TLS settings", aliases=["ls"])
    address_argument(leaf(actions, "show", common, _show, "show how a registry is reached"))
    address_argument(leaf(actions, "rm", common, _remove, "forget what was set for a registry; it is reached "
                          "on https://ADDRESS again"))

    set_ = leaf(actions, "set", common, _set, "change how a registry is reached",
                description="Change how a registry is reached. Only the options given change; a --no-... "
                "option clears its setting.")
    address_argument(set_)
    endpoint = set_.add_mutually_exclusive_group()
    endpoint.add_argument("--endpoint", metavar="URL", help="reach it at URL instead of https://ADDRESS: "
                          "https://host[:port], or http://host[:port] for a registry on plain HTTP")
    endpoint.add_argument("--no-endpoint", action="store_true", help="reach it on https://ADDRESS again")
    set_.add_argument("--insecure", action=argparse.BooleanOptionalAction, default=None,
                      help="HTTPS without certificate checks, falling back to plain HTTP (docker's "
                      "insecure-registries); --no-insecure checks certificates again")
    ca = set_.add_mutually_exclusive_group()
    ca.add_argument("--ca-cert", metavar="FILE", help="PEM file of CA certificates to trust for this registry "
                    "only, on top of the system's; replaces any set before")
    ca.add_argument("--no-ca-cert", action="store_true", help="trust the system's CAs only")
    set_.add_argument("--client-cert", metavar="FILE", help="PEM client certificate (chain) for mutual TLS")
    set_.add_argument("--client-key", metavar="FILE", help="its unencrypted PEM private key; sent once, never "
                      "shown again")
    set_.add_argument("--no-client-cert", action="store_true", help="drop the client certificate and its key")
    alias = set_.add_mutually_exclusive_group()
    alias.add_argument("--alias", metavar="NAME", help="let clients write NAME instead of ADDRESS as the first "
                       "path component (proxy:5000/NAME/team/app:1), for an address with a port; lowercase letters "
                       "and digits separated by _, __ or -")
    alias.add_argument("--no-alias", action="store_true", help="drop the alias")


# Handlers


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_upstreams()
    if args.json:
        return print_json(answer)
    rows = []
    for u in items_of(answer, "upstreams"):
        cas = _certificates(u)
        rows.append([text(u.get("address")), text(u.get("alias")), text(u.get("endpoint")), yes_no(u.get("insecure")),
                     str(len(cas)) if cas else "-", _earliest_expiry(cas), yes_no(bool(u.get("client_cert"))),
                     text(u.get("source"))])
    print_table(_UPSTREAM_COLUMNS, rows)


def _show(client: AdminClient, args: argparse.Namespace) -> None:
    _print_upstream(args, client.show_upstream(args.address))


def _remove(client: AdminClient, args: argparse.Namespace) -> None:
    client.delete_upstream(args.address)
    if not args.json:  # 204 without a body: --json prints nothing
        print(f"removed the upstream settings for {text(args.address)}")


def _set(client: AdminClient, args: argparse.Namespace) -> None:
    changes: dict[str, str | bool | None] = {}
    secrets: list[str] = []
    if args.endpoint is not None:
        changes["endpoint"] = args.endpoint
    elif args.no_endpoint:
        changes["endpoint"] = None
    if args.insecure is not None:
        changes["insecure"] = args.insecure
    if args.ca_cert is not None:
        changes["ca_cert"] = _read_certificates(args.ca_cert, "--ca-cert", "ca_cert")
    elif args.no_ca_cert:
        changes["ca_cert"] = None
    if args.no_client_cert:
        if args.client_cert is not None or args.client_key is not None:
            raise UsageError("--no-client-cert cannot go with --client-cert or --client-key", field="client_cert")
        changes["client_cert"] = changes["client_key"] = None
    if args.client_cert is not None:
        # Alone it is allowed: a renewed certificate for the key already stored.
        changes["client_cert"] = _read_certificates(args.client_cert, "--client-cert", "client_cert")
    if args.client_key is not None:
        key = _read_key(args.client_key)
        changes["client_key"] = key
        secrets.append(key)
    if args.alias is not None:
        changes["alias"] = args.alias
    elif args.no_alias:
        changes["alias"] = None
    if not changes:
        raise UsageError("nothing to change: give --endpoint, --insecure, --ca-cert, --client-cert and "
                         "--client-key or --alias, or a --no-... option to clear one")
    _print_upstream(args, client.change_upstream(args.address, changes, secrets=secrets))


# Files


def _read_text(path: str, flag: str, field: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc.strerror or type(exc).__name__}", field=field) from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path} is not a PEM text file", field=field) from None


def _read_certificates(path: str, flag: str, field: str) -> str:
    # Only the CERTIFICATE blocks are sent: the API shows certificates back as
    # stored, so a key sharing the file (cert and key in one .pem) must not go along.
    try:
        return certificates_only(_read_text(path, flag, field))
    except ValueError:
        raise UsageError(f"{flag} {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                         field=field) from None


def _read_key(path: str) -> str:
    match = _KEY_BLOCK.search(_read_text(path, "--client-key", "client_key"))
    if match is None:
        # The text is not quoted: it may be the key in some other form.
        raise UsageError(f"--client-key {path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                         field="client_key")
    if match.group(1).strip() == "ENCRYPTED":
        raise UsageError(f"--client-key {path} is encrypted; the proxy needs it unencrypted, e.g. from "
                         "`openssl pkey -in KEY -out plain.key`", field="client_key")
    return match.group(0) + "\n"


# Output


def _certificates(upstream: dict[str, Any]) -> list[dict[str, Any]]:
    cas = upstream.get("ca_certificates")
    return [c for c in cas if isinstance(c, dict)] if isinstance(cas, list) else []


def _earliest_expiry(cas: list[dict[str, Any]]) -> str:
    ends = [end for end in (parse_time(c.get("not_after")) for c in cas) if end is not None]
    if not ends:
        return "-"
    end = min(ends)
    return end.strftime("%Y-%m-%d") + (" EXPIRED" if end <= datetime.now(UTC) else "")


def _print_upstream(args: argparse.Namespace, upstream: dict[str, Any]) -> None:
    if args.json:
        return print_json(upstream)
    pairs = [("address", text(upstream.get("address"))), ("alias", text(upstream.get("alias"))),
             ("endpoint", text(upstream.get("endpoint"))),
             ("insecure", yes_no(upstream.get("insecure")))]
    cas = _certificates(upstream)
    for n, ca in enumerate(cas, 1):
        pairs.append((f"ca cert {n}" if len(cas) > 1 else "ca cert",
                      f"{text(ca.get('subject'))}, expires {expiry(ca.get('not_after'))}, SHA256 {text(ca.get('sha256'))}"))
    if not cas:
        pairs.append(("ca cert", "-"))
    # The first certificate is the client's own; the rest is its chain.
    client_cert = upstream.get("client_cert")
    first = CERT_BLOCK.search(client_cert) if isinstance(client_cert, str) else None
    pairs.append(("client cert", f"set, SHA256 {colons(pem_sha256(first.group(0)))}" if first else "-"))
    pairs.append(("client key", "set" if upstream.get("client_key_set") is True else "-"))
    pairs.append(("source", text(upstream.get("source"))))
    print_fields(pairs)
