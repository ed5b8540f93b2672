"""Secrets at rest: AES-256-GCM with a key kept beside the data directory.

The key comes from ``REGISTRY_PROXY_SECRET_KEY`` (base64 of 32 bytes) or from
a key file, created on first start with mode 0600. Each ciphertext is bound
to its row (the associated data), so a secret copied onto another row does
not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SecretBox", "SecretError", "load_key"]

KEY_ENV = "REGISTRY_PROXY_SECRET_KEY"
_NONCE = 12


class SecretError(Exception):
    pass


def load_key(key_file: Path, environ: dict[str, str] | os._Environ[str]) -> bytes:
    if environ.get(KEY_ENV):
        return _decode(environ[KEY_ENV], KEY_ENV)
    if key_file.exists():
        return _decode(key_file.read_text().strip(), str(key_file))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    # O_EXCL: two processes starting at once must not each write their own key.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"secret key in {where} is not base64") from None
    if len(key) != 32:
        raise SecretError(f"secret key in {where} must be 32 bytes, not {len(key)}")
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cipher: AESGCM | None = None

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead().encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead().decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise SecretError("a stored secret cannot be decrypted with this key") from None

    def _aead(self) -> AESGCM:
        # cryptography adds some 8 MiB to the resident size: a proxy that
        # stores no secret never loads it.
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher
