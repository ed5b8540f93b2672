"""The secrets sealed in the store, which of them the key in use cannot open, and giving those up.

Start-up checks them before anything uses the store: without its key, a
sealed secret is lost, and the proxy says so, naming the key it looked for,
rather than failing later or writing a new key beside it. Secrets of the
config file's credentials do not count: they are sealed again from the file
at every start. Giving a secret up clears it; a credential loses its
password (or cloud key) and is deactivated, so pulls never send it without
one, and an upstream loses its client certificate with the key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from proxy.store.crypto import KEY_ENV, SecretBox, SecretError
from proxy.store.db import Conn

__all__ = ["SealedSecret", "forget", "key_missing_error", "sealed_secrets", "undecryptable", "wrong_key_error"]

# What the sealed column holds, by credential kind.
_SECRET_OF_KIND = {"basic": "password", "ecr": "secret access key", "gcr": "JSON key"}


@dataclass(frozen=True)
class SealedSecret:
    """One sealed secret, described without it."""

    table: str  # "registries" or "upstreams"
    key: str  # the credential's id or the upstream's address
    address: str
    username: str
    what: str  # "password", "client key", ...
    sealed: bytes

    @property
    def context(self) -> str:
        # The associated data each store seals the secret with.
        return f"{self.table}:{self.key}"


def sealed_secrets(conn: Conn) -> list[SealedSecret]:
    """Every secret sealed in the store that only its key can give back."""
    credentials = conn.execute("SELECT id, address, username, kind, secret FROM registries"
                               " WHERE secret IS NOT NULL AND source != 'config' ORDER BY id").fetchall()
    upstreams = conn.execute("SELECT address, client_key FROM upstreams WHERE client_key IS NOT NULL"
                             " ORDER BY address").fetchall()
    return ([SealedSecret("registries", str(row["id"]), row["address"], row["username"],
                          _SECRET_OF_KIND.get(row["kind"], "secret"), row["secret"]) for row in credentials]
            + [SealedSecret("upstreams", row["address"], row["address"], "", "client key", row["client_key"])
               for row in upstreams])


def undecryptable(conn: Conn, box: SecretBox | None) -> list[SealedSecret]:
    """The sealed secrets ``box`` cannot open; all of them without a box (no key)."""
    return [secret for secret in sealed_secrets(conn) if box is None or not box.opens(secret.sealed, secret.context)]


def forget(conn: Conn, secrets: list[SealedSecret]) -> None:
    """Clear these secrets, in the caller's transaction; only if each is still the one sealed."""
    now = time.time()
    for secret in secrets:
        if secret.table == "registries":
            conn.execute("UPDATE registries SET secret = NULL, active = 0, updated = ? WHERE id = ? AND secret = ?",
                         (now, int(secret.key), secret.sealed))
        else:
            conn.execute("UPDATE upstreams SET client_key = NULL, client_cert = NULL, updated = ?"
                         " WHERE address = ? AND client_key = ?", (now, secret.key, secret.sealed))


_GIVE_UP = ("or give them up with `registry-proxy secrets forget-undecryptable` (with the --config or --data-dir "
            "serve runs with), which lists them and asks first, and enter them again")


def key_missing_error(reason: str, count: int, state: str) -> SecretError:
    """No key, and ``count`` secrets in the store at ``state`` that need one."""
    return SecretError(f"no secret key: {reason}, but the store {state} holds {_secrets(count)} sealed with one. "
                       f"Put that key back (at that path, at secrets.key_file or in ${KEY_ENV}), {_GIVE_UP}. "
                       "No new key was written.")


def wrong_key_error(origin: str, count: int, state: str) -> SecretError:
    """``count`` secrets in the store at ``state`` that the key from ``origin`` does not open."""
    return SecretError(f"{_secrets(count)} stored in {state} cannot be decrypted with the secret key from {origin}. "
                       f"Start with the key they were sealed with (secrets.key_file or ${KEY_ENV}), {_GIVE_UP}.")


def _secrets(count: int) -> str:
    return "1 secret" if count == 1 else f"{count} secrets"
