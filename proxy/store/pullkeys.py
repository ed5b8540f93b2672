"""Pull keys: an id a client logs in with, and a secret stored only as a scrypt hash.

scrypt is slow on purpose (tens of milliseconds and 16 MiB a check), so a
stolen state.db does not give the secrets away. Callers run it in a thread
and remember a verified secret by a fast digest, so a pull does not pay it
per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

__all__ = ["PullKeyRecord", "hash_secret", "new_key_id", "new_secret", "verify_secret"]

_N, _R, _P, _LEN = 2**14, 8, 1, 32


@dataclass(frozen=True)
class PullKeyRecord:
    id: str
    environment: str
    source: str  # "api" or "config"
    created: float
    last_used: float | None = None
    hash: str = field(default="", repr=False)


def new_key_id() -> str:
    return f"pk-{secrets.token_hex(6)}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the one ``stored`` was hashed from; constant time in the secret."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
