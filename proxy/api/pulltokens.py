"""The proxy's own bearer tokens: short-lived, signed, naming the environment and the key.

Issued by the token realm (Docker's token authentication) to clients that
logged in with a pull key, or anonymously where that is admitted, so a
client sends its secret once per token rather than on every request.
They are HMAC-signed with a key derived from the secret key that seals
stored credentials, so every replica sharing that key accepts them and a
restart does not log anyone out. Opaque to clients: the spec only asks that
they be sent back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TOKEN_TTL", "Identity", "TokenSigner"]

TOKEN_TTL = 300
_PREFIX = "rp1"
_REMEMBERED = 10_000


@dataclass(frozen=True)
class Identity:
    """Who a registry request is from: an environment, and the key used (None: anonymous).

    ``key_version`` tells one secret of a key id from the next (a config
    file's key whose secret was replaced), so tokens end with their secret.
    """

    environment: str
    key_id: str | None = None
    key_version: str | None = None


class TokenSigner:
    def __init__(self, secret_key: bytes, *, ttl: int = TOKEN_TTL, clock: Callable[[], float] = time.time) -> None:
        # Its own key, so a token never doubles as anything the sealing key signs.
        self._key = hmac.new(secret_key, b"registry-proxy pull tokens v1", hashlib.sha256).digest()
        self.ttl = ttl
        self._clock = clock
        # Token -> (identity, expiry): a client sends the same token on every
        # request of a pull, and a dictionary lookup beats an HMAC and a JSON parse.
        self._verified: dict[str, tuple[Identity, int]] = {}

    def issue(self, identity: Identity) -> str:
        claims = {"e": identity.environment, "k": identity.key_id, "v": identity.key_version,
                  "x": int(self._clock()) + self.ttl}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{_PREFIX}.{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> Identity | None:
        """The identity a valid, unexpired token names; None for anything else."""
        if not token.isascii():  # never one of ours; and header bytes that are not UTF-8 cannot be encoded
            return None
        known = self._verified.get(token)
        if known is not None:
            return known[0] if known[1] > self._clock() else None
        prefix, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if prefix != _PREFIX or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            environment, key_id, version, expires = claims["e"], claims["k"], claims["v"], claims["x"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(environment, str) or not isinstance(expires, int) or expires <= self._clock():
            return None
        if not all(value is None or isinstance(value, str) for value in (key_id, version)):
            return None
        identity = Identity(environment, key_id, version)
        if len(self._verified) >= _REMEMBERED:
            self._verified.clear()
        self._verified[token] = (identity, expires)
        return identity

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
