"""Certificates as the operator compares them: SHA-256 fingerprints and validity dates.

Fingerprints are computed here from the PEM that is stored, never taken from
the server's word, so a fingerprint pinned on the command line covers exactly
what is sent back. They are shown as openssl shows them (``AB:CD:..``) and
accepted in the spellings operators are handed. Dates are UTC and say
EXPIRED or NOT YET VALID when a certificate does not hold now.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import ssl
from datetime import UTC, datetime

from proxy.cli.client import AdminError
from proxy.cli.output import parse_time, text

__all__ = ["CERT_BLOCK", "colons", "expiry", "fingerprint", "pem_sha256"]

CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


def fingerprint(given: str) -> str:
    """64 lowercase hex digits, from AB:CD:.., abcd.., sha256:.. or openssl's `SHA256 Fingerprint=..`."""
    value = given.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        value = value.removeprefix(prefix)
    value = re.sub(r"[:\s]", "", value)
    if not _SHA256_HEX.fullmatch(value):
        hint = "; that is 20 bytes, a SHA-1 fingerprint: ask for -sha256" if _SHA1_HEX.fullmatch(value) else ""
        raise argparse.ArgumentTypeError(f"{given!r} is not a SHA-256 fingerprint (32 bytes as AB:CD:.. or 64 hex "
                                         f"digits){hint}")
    return value


def pem_sha256(pem: str) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise AdminError("the proxy sent a certificate that is not PEM") from None
    return hashlib.sha256(der).hexdigest()


def colons(hex_digest: str) -> str:
    upper = hex_digest.upper()
    return ":".join(upper[i:i + 2] for i in range(0, len(upper), 2))


def expiry(not_after: object, not_before: object = None) -> str:
    """`2026-12-27 20:54 UTC`, with EXPIRED (or NOT YET VALID) when the certificate does not hold now."""
    end, start = parse_time(not_after), parse_time(not_before)
    if end is None:
        return text(not_after)
    now = datetime.now(UTC)
    if end <= now:
        return f"{_date(end)} EXPIRED"
    if start is not None and start > now:
        return f"{_date(end)} NOT YET VALID (from {_date(start)})"
    return _date(end)


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
