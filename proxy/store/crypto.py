"""Secrets at rest: AES-256-GCM with a key kept beside the data directory.

The key comes from ``REGISTRY_PROXY_SECRET_KEY`` (base64 of 32 bytes) or from
a key file, created on first start with mode 0600. A key file is created
only when the caller allows it (the store holds no secret sealed under an
earlier key) and never over an existing one. Each ciphertext is bound to its
row (the associated data), so a secret copied onto another row does not
decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_ENV", "KeyMissing", "SecretBox", "SecretError", "key_origin", "load_key"]

KEY_ENV = "REGISTRY_PROXY_SECRET_KEY"
_NONCE = 12


class SecretError(Exception):
    """A key or a stored secret that cannot be used; worded for a one-line start-up failure."""


class KeyMissing(SecretError):
    """No key is given, and the caller did not allow a new one."""


def key_origin(key_file: Path, environ: Mapping[str, str]) -> str:
    """Where ``load_key`` takes the key from, for messages: the variable or the file."""
    return f"${KEY_ENV}" if environ.get(KEY_ENV) else str(key_file)


def load_key(key_file: Path, environ: Mapping[str, str], *, create: bool = True) -> bytes:
    """The key from ``$REGISTRY_PROXY_SECRET_KEY``, else from ``key_file``; a new one in ``key_file`` if ``create``."""
    if environ.get(KEY_ENV):
        return _decode(environ[KEY_ENV], KEY_ENV)
    try:
        return _decode(key_file.read_text().strip(), str(key_file))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretError(f"the secret key file {key_file} cannot be read: {exc.strerror}") from None
    if not create:
        raise KeyMissing(f"{key_file} does not exist and ${KEY_ENV} is not set")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    # O_EXCL: two processes starting at once must not each write their own
    # key, and no key is ever written over another.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _decode(key_file.read_text().strip(), str(key_file))
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

    def opens(self, sealed: bytes, context: str) -> bool:
        try:
            self.open(sealed, context)
        except SecretError:
            return False
        return True

    def _aead(self) -> AESGCM:
        # cryptography adds some 8 MiB to the resident size: a proxy that
        # stores no secret never loads it.
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher
