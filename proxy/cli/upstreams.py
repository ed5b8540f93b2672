"""Command line for how registries are reached: ``registry-proxy upstreams ...`` and ``registries fetch-ca``.

Trusting a certificate is the decision a machine in the middle would most
like to make for the operator, so ``fetch-ca`` shows what the registry
presents and asks; only a fingerprint pinned on the command line may skip
the question. Fingerprints are computed here from the PEM that will be
stored, so the pin covers exactly what is sent back.

The client key is a secret like a password: read from a file, sent once,
never printed. The API answers ``client_key_set`` only.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from proxy.cli.admin import _items, _leaf, _print_fields, _print_json, _print_table, _yes_no
from proxy.cli.client import AdminClient, AdminError, UsageError
from proxy.cli.kinds import text

__all__ = ["add_fetch_ca_parser", "add_upstreams_parser"]

_UPSTREAM_COLUMNS = ("ADDRESS", "ENDPOINT", "INSECURE", "CA CERTS", "CA EXPIRES", "CLIENT CERT", "SOURCE")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_KEY_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n.*?-----END \1PRIVATE KEY-----", re.DOTALL)

YES_NEEDS_FINGERPRINT = (
    "--yes needs --fingerprint: without a fingerprint to check, --yes would trust whatever certificate answers, "
    "a man in the middle's included; pass --fingerprint SHA256 from the registry's operator, or leave out --yes "
    "and compare it on the terminal")


# Parsers


def add_fetch_ca_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser],
                        common: argparse.ArgumentParser) -> None:
    fetch = _leaf(actions, "fetch-ca", common, _fetch_ca, "trust the certificate a registry presents, once checked",
                  description="Show the certificate chain the registry presents to the proxy (fetched without "
                  "verification), then trust one certificate of it for that registry only. Without --fingerprint "
                  "the last certificate presented (the top-most CA) is chosen. Applies to the next pull.")
    _address_argument(fetch)
    fetch.add_argument("--fingerprint", metavar="SHA256", type=_fingerprint,
                       help="trust the presented certificate with this SHA-256 fingerprint, as AB:CD:.., abcd.. "
                       "or sha256:..; get it from the registry's operator, e.g. `openssl x509 -noout "
                       "-fingerprint -sha256 -in ca.crt`")
    fetch.add_argument("--yes", "-y", action="store_true",
                       help="store without asking; only together with --fingerprint")


def add_upstreams_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                         common: argparse.ArgumentParser) -> None:
    upstreams = sub.add_parser("upstreams", help="how each registry is reached: endpoint, TLS trust, client "
                               "certificate (admin API)",
                               description="How the proxy reaches each registry. A change applies to the next "
                               "pull and outlives restarts; registries set in the config file change there only.")
    actions = upstreams.add_subparsers(dest="action", metavar="ACTION", required=True)
    _leaf(actions, "list", common, _list, "list the registries with an endpoint or TLS settings", aliases=["ls"])
    _address_argument(_leaf(actions, "show", common, _show, "show how a registry is reached"))
    _address_argument(_leaf(actions, "rm", common, _remove, "forget what was set for a registry; it is reached "
                            "on https://ADDRESS again"))

    set_ = _leaf(actions, "set", common, _set, "change how a registry is reached",
                 description="Change how a registry is reached. Only the options given change; a --no-... "
                 "option clears its setting.")
    _address_argument(set_)
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


def _address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", metavar="ADDRESS", type=_address,
                        help="registry host[:port] as in image names, no scheme, e.g. registry.example.com:5000")


def _address(text: str) -> str:
    # An empty address would make the path /upstreams/, which only the router answers (404).
    if not text.strip():
        raise argparse.ArgumentTypeError("the registry address must not be empty")
    return text


def _fingerprint(text: str) -> str:
    """64 lowercase hex digits, from AB:CD:.., abcd.., sha256:.. or openssl's `SHA256 Fingerprint=..`."""
    value = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        value = value.removeprefix(prefix)
    value = re.sub(r"[:\s]", "", value)
    if not _SHA256_HEX.fullmatch(value):
        hint = "; that is 20 bytes, a SHA-1 fingerprint: ask for -sha256" if _SHA1_HEX.fullmatch(value) else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 fingerprint (32 bytes as AB:CD:.. or 64 hex "
                                         f"digits){hint}")
    return value


# Handlers


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.list_upstreams()
    if args.json:
        return _print_json(answer)
    rows = []
    for u in _items(answer, "upstreams"):
        cas = _certificates(u)
        rows.append([text(u.get("address")), text(u.get("endpoint")), _yes_no(u.get("insecure")),
                     str(len(cas)) if cas else "-", _earliest_expiry(cas), _yes_no(bool(u.get("client_cert"))),
                     text(u.get("source"))])
    _print_table(_UPSTREAM_COLUMNS, rows)


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
    if not changes:
        raise UsageError("nothing to change: give --endpoint, --insecure, --ca-cert or --client-cert and "
                         "--client-key, or a --no-... option to clear one")
    _print_upstream(args, client.change_upstream(args.address, changes, secrets=secrets))


def _fetch_ca(client: AdminClient, args: argparse.Namespace) -> None:
    # Checked before anything is fetched: no answer from the network changes it.
    if args.yes and args.fingerprint is None:
        raise UsageError(YES_NEEDS_FINGERPRINT, field="fingerprint")
    current = client.show_upstream(args.address)
    address = text(current.get("address") or args.address)
    if current.get("source") == "config":
        # The PATCH would be refused with 409; better before the operator has judged a chain.
        raise AdminError(f"how {address} is reached is set in the config file: save the certificate to a file, "
                         "name it as ca_cert in that registries entry and restart; nothing was stored",
                         field="address")
    answer = client.presented_certificates(args.address)
    chain = [_Presented(c) for c in _items(answer, "certificates")]
    if not chain:
        raise AdminError(f"{address} presented no certificate; nothing was stored")
    if args.fingerprint is not None:
        chosen = next((c for c in chain if c.sha256 == args.fingerprint), None)
    else:
        chosen = chain[-1]  # the top-most presented: the CA, when the registry sends its chain
    ask = not args.yes
    # With --json, stdout is for the answer alone; the chain is for the eyes of whoever is asked.
    if not args.json or (ask and sys.stdin.isatty()):
        _print_chain(sys.stderr if args.json else sys.stdout, address, text(answer.get("endpoint")), chain, chosen)
    if chosen is None:
        raise AdminError(f"{address} presents no certificate with SHA-256 {_colons(args.fingerprint)}; nothing "
                         "was stored", field="fingerprint")
    validity = _expiry(chosen.not_after, chosen.not_before)
    if "EXPIRED" in validity or "NOT YET VALID" in validity:
        # Trust does not extend a certificate's dates: pulls will keep failing.
        print(f"warning: {chosen.subject} is not valid now ({validity}); the registry must present a current "
              "certificate before pulls work", file=sys.stderr)
    if ask:
        if not sys.stdin.isatty():
            raise UsageError("nothing was stored: stdin is not a terminal to ask on; compare the fingerprint with "
                             "one from the registry's operator, then pass --yes --fingerprint SHA256")
        if not _confirm(f"Trust {chosen.subject} (SHA256 {_colons(chosen.sha256)}) for {address}? [y/N] "):
            raise AdminError("not trusted; nothing was stored")
    stored = client.change_upstream(args.address, {"ca_cert": chosen.pem})
    if stored.get("insecure") is True:
        print(f"warning: {address} is still insecure, so no certificate is checked; check them with "
              f"'registry-proxy upstreams set {address} --no-insecure'", file=sys.stderr)
    if args.json:
        return _print_json(stored)
    print(f"stored as ca_cert for {address}: {chosen.subject}, SHA256 {_colons(chosen.sha256)}, "
          f"expires {validity}; applies to the next pull")


# Certificates


class _Presented:
    """One certificate of the chain, its fingerprint computed from the PEM that would be stored."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.pem = raw.get("pem")
        if not isinstance(self.pem, str):
            raise AdminError("the proxy's answer has a certificate without its PEM; is it an older registry-proxy?")
        self.sha256 = _pem_sha256(self.pem)
        self.subject = text(raw.get("subject"))
        self.issuer = text(raw.get("issuer"))
        self.not_before = raw.get("not_before")
        self.not_after = raw.get("not_after")
        self.is_ca = raw.get("is_ca") is True


def _pem_sha256(pem: str) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise AdminError("the proxy sent a certificate that is not PEM") from None
    return hashlib.sha256(der).hexdigest()


def _print_chain(out: TextIO, address: str, endpoint: str, chain: list[_Presented], chosen: _Presented | None) -> None:
    print(f"{address} presents at {endpoint} (not verified):", file=out)
    for n, cert in enumerate(chain, 1):
        marks = [m for m, on in (("CA", cert.is_ca), ("to be trusted", cert is chosen)) if on]
        print(f"[{n}] {cert.subject}{''.join(f'  <{m}>' for m in marks)}", file=out)
        issuer = "itself" if cert.issuer == cert.subject else cert.issuer
        print(f"    issued by: {issuer}", file=out)
        print(f"    expires:   {_expiry(cert.not_after, cert.not_before)}", file=out)
        print(f"    SHA-256:   {_colons(cert.sha256)}", file=out)
    out.flush()


def _confirm(question: str) -> bool:
    sys.stdout.flush()
    # On stderr, so the question shows while stdout goes to a file or a pipe.
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer:  # end of input (^D) is a no, on a line of its own
        print(file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")


def _expiry(not_after: object, not_before: object = None) -> str:
    """`2026-12-27 20:54 UTC`, with EXPIRED (or NOT YET VALID) when the certificate does not hold now."""
    end, start = when(not_after), when(not_before)
    if end is None:
        return text(not_after)
    now = datetime.now(UTC)
    if end <= now:
        return f"{_date(end)} EXPIRED"
    if start is not None and start > now:
        return f"{_date(end)} NOT YET VALID (from {_date(start)})"
    return _date(end)


def _earliest_expiry(cas: list[dict[str, Any]]) -> str:
    ends = [end for end in (when(c.get("not_after")) for c in cas) if end is not None]
    if not ends:
        return "-"
    end = min(ends)
    return end.strftime("%Y-%m-%d") + (" EXPIRED" if end <= datetime.now(UTC) else "")


def when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _colons(hex_digest: str) -> str:
    upper = hex_digest.upper()
    return ":".join(upper[i:i + 2] for i in range(0, len(upper), 2))


def _certificates(upstream: dict[str, Any]) -> list[dict[str, Any]]:
    cas = upstream.get("ca_certificates")
    return [c for c in cas if isinstance(c, dict)] if isinstance(cas, list) else []


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
    blocks = _CERT_BLOCK.findall(_read_text(path, flag, field))
    if not blocks:
        raise UsageError(f"{flag} {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", field=field)
    return "\n".join(blocks) + "\n"


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


def _print_upstream(args: argparse.Namespace, upstream: dict[str, Any]) -> None:
    if args.json:
        return _print_json(upstream)
    pairs = [("address", text(upstream.get("address"))), ("endpoint", text(upstream.get("endpoint"))),
             ("insecure", _yes_no(upstream.get("insecure")))]
    cas = _certificates(upstream)
    for n, ca in enumerate(cas, 1):
        pairs.append((f"ca cert {n}" if len(cas) > 1 else "ca cert",
                      f"{text(ca.get('subject'))}, expires {_expiry(ca.get('not_after'))}, SHA256 {text(ca.get('sha256'))}"))
    if not cas:
        pairs.append(("ca cert", "-"))
    # The first certificate is the client's own; the rest is its chain.
    client_cert = upstream.get("client_cert")
    first = _CERT_BLOCK.search(client_cert) if isinstance(client_cert, str) else None
    pairs.append(("client cert", f"set, SHA256 {_colons(_pem_sha256(first.group(0)))}" if first else "-"))
    pairs.append(("client key", "set" if upstream.get("client_key_set") is True else "-"))
    pairs.append(("source", text(upstream.get("source"))))
    _print_fields(pairs)
