"""``registry-proxy registries fetch-ca``: trust the certificate a registry presents, once checked.

Trusting a certificate is the decision a machine in the middle would most
like to make for the operator, so ``fetch-ca`` shows what the registry
presents and asks; only a fingerprint pinned on the command line may skip
the question. Fingerprints are computed from the PEM that will be stored
(``proxy.cli.certs``), so the pin covers exactly what is sent back.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from proxy.cli.certs import colons, expiry, fingerprint, pem_sha256
from proxy.cli.client import AdminClient, AdminError, UsageError
from proxy.cli.output import items_of, print_json, text
from proxy.cli.parsing import Actions, address_argument, leaf

__all__ = ["YES_NEEDS_FINGERPRINT", "add_fetch_ca_parser"]

YES_NEEDS_FINGERPRINT = (
    "--yes needs --fingerprint: without a fingerprint to check, --yes would trust whatever certificate answers, "
    "a man in the middle's included; pass --fingerprint SHA256 from the registry's operator, or leave out --yes "
    "and compare it on the terminal")


def add_fetch_ca_parser(actions: Actions, common: argparse.ArgumentParser) -> None:
    fetch = leaf(actions, "fetch-ca", common, _fetch_ca, "trust the certificate a registry presents, once checked",
                 description="Show the certificate chain the registry presents to the proxy (fetched without "
                 "verification), then trust one certificate of it for that registry only. Without --fingerprint "
                 "the last certificate presented (the top-most CA) is chosen. Applies to the next pull.")
    address_argument(fetch)
    fetch.add_argument("--fingerprint", metavar="SHA256", type=fingerprint,
                       help="trust the presented certificate with this SHA-256 fingerprint, as AB:CD:.., abcd.. "
                       "or sha256:..; get it from the registry's operator, e.g. `openssl x509 -noout "
                       "-fingerprint -sha256 -in ca.crt`")
    fetch.add_argument("--yes", "-y", action="store_true",
                       help="store without asking; only together with --fingerprint")


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
    chain = [_Presented(c) for c in items_of(answer, "certificates")]
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
        raise AdminError(f"{address} presents no certificate with SHA-256 {colons(args.fingerprint)}; nothing "
                         "was stored", field="fingerprint")
    validity = expiry(chosen.not_after, chosen.not_before)
    if "EXPIRED" in validity or "NOT YET VALID" in validity:
        # Trust does not extend a certificate's dates: pulls will keep failing.
        print(f"warning: {chosen.subject} is not valid now ({validity}); the registry must present a current "
              "certificate before pulls work", file=sys.stderr)
    if ask:
        if not sys.stdin.isatty():
            raise UsageError("nothing was stored: stdin is not a terminal to ask on; compare the fingerprint with "
                             "one from the registry's operator, then pass --yes --fingerprint SHA256")
        if not _confirm(f"Trust {chosen.subject} (SHA256 {colons(chosen.sha256)}) for {address}? [y/N] "):
            raise AdminError("not trusted; nothing was stored")
    stored = client.change_upstream(args.address, {"ca_cert": chosen.pem})
    if stored.get("insecure") is True:
        print(f"warning: {address} is still insecure, so no certificate is checked; check them with "
              f"'registry-proxy upstreams set {address} --no-insecure'", file=sys.stderr)
    if args.json:
        return print_json(stored)
    print(f"stored as ca_cert for {address}: {chosen.subject}, SHA256 {colons(chosen.sha256)}, "
          f"expires {validity}; applies to the next pull")


class _Presented:
    """One certificate of the chain, its fingerprint computed from the PEM that would be stored."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.pem = raw.get("pem")
        if not isinstance(self.pem, str):
            raise AdminError("the proxy's answer has a certificate without its PEM; is it an older registry-proxy?")
        self.sha256 = pem_sha256(self.pem)
        self.subject = text(raw.get("subject"))
        self.issuer = text(raw.get("issuer"))
        self.not_before = raw.get("not_before")
        self.not_after = raw.get("not_after")
        self.is_ca = raw.get("is_ca") is True


def _print_chain(out: TextIO, address: str, endpoint: str, chain: list[_Presented], chosen: _Presented | None) -> None:
    print(f"{address} presents at {endpoint} (not verified):", file=out)
    for n, cert in enumerate(chain, 1):
        marks = [m for m, on in (("CA", cert.is_ca), ("to be trusted", cert is chosen)) if on]
        print(f"[{n}] {cert.subject}{''.join(f'  <{m}>' for m in marks)}", file=out)
        issuer = "itself" if cert.issuer == cert.subject else cert.issuer
        print(f"    issued by: {issuer}", file=out)
        print(f"    expires:   {expiry(cert.not_after, cert.not_before)}", file=out)
        print(f"    SHA-256:   {colons(cert.sha256)}", file=out)
    out.flush()


def _confirm(question: str) -> bool:
    sys.stdout.flush()
    # On stderr, so the question shows while stdout goes to a file or a pipe.
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer:  # end of input (^D) is a no, on a line of its own
        print(file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")
