"""``registry-proxy secrets forget-undecryptable``: give up the stored secrets the key at hand cannot open.

A way out when the secret key is lost or replaced: the proxy refuses to
start while the store holds secrets it cannot decrypt, rather than failing
later or writing a new key beside them. This command reads the same config
as ``serve`` (``--config``, ``--data-dir``), so it looks for the key where
the proxy does; it works on the data directory directly, with the proxy
stopped. It lists what would be lost (credential id, address and username,
never a secret), asks, then clears those secrets: the credentials are
deactivated, the upstreams lose their client certificate. The proxy then
starts, and the secrets can be entered again with ``registries edit`` and
``registries activate``, or ``upstreams set --client-cert --client-key``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config.settings import SettingsError, load_settings
from proxy.postgres.pool import PgUnavailable
from proxy.store.choose import state_database
from proxy.store.crypto import KeyMissing, SecretBox, SecretError, key_origin, load_key
from proxy.store.db import Database
from proxy.store.sealed import SealedSecret, forget, undecryptable

if TYPE_CHECKING:
    from proxy.cli.parsing import Actions

__all__ = ["SECRETS_COMMAND", "add_secrets_parser", "run_secrets_command"]

SECRETS_COMMAND = "secrets"


def add_secrets_parser(sub: Actions) -> None:
    secrets = sub.add_parser(SECRETS_COMMAND, help="the stored secrets and their key (works on the data directory)",
                             description="The stored secrets and the key that seals them. Run with the proxy "
                             "stopped, with the config serve runs with.")
    actions = secrets.add_subparsers(dest="action", metavar="ACTION", required=True)
    forget_ = actions.add_parser(
        "forget-undecryptable", help="clear the stored secrets the secret key cannot decrypt, after confirmation",
        description="List the stored secrets the secret key (REGISTRY_PROXY_SECRET_KEY, else secrets.key_file, "
        "else REGISTRY_PROXY_SECRET_KEY_FILE, else <data_dir>.key) cannot decrypt, and clear them once confirmed, "
        "so the proxy starts again. Their credentials are deactivated and upstreams lose their client "
        "certificate; enter them again with 'registries edit' and 'registries activate', or 'upstreams set'.")
    forget_.add_argument("--config", help="YAML config file, as for serve")
    forget_.add_argument("--data-dir", help="as for serve --data-dir")
    forget_.add_argument("--yes", action="store_true", help="do not ask; clear them")


def run_secrets_command(args: argparse.Namespace) -> int:
    """Run ``secrets forget-undecryptable``; the exit status."""
    try:
        settings = load_settings(Path(args.config) if args.config else None, data_dir=args.data_dir)
    except SettingsError as exc:
        print(f"registry-proxy: {exc}", file=sys.stderr)
        return 2
    db = state_database(settings.data_dir, settings.state.url)
    if settings.state.url is None and not Path(db.description).is_file():
        print(f"registry-proxy: no store at {db.description}: nothing to forget", file=sys.stderr)
        return 2
    origin = key_origin(settings.key_file, os.environ)
    try:
        box: SecretBox | None = SecretBox(load_key(settings.key_file, os.environ, create=False))
    except KeyMissing:
        box = None
    except SecretError as exc:
        # A damaged key is fixed, not worked around by dropping what it opens.
        print(f"registry-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_forget(db, box, origin, assume_yes=args.yes))
    except PgUnavailable as exc:
        print(f"registry-proxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nregistry-proxy: interrupted; nothing was changed", file=sys.stderr)
        return 130


async def _forget(db: Database, box: SecretBox | None, origin: str, *, assume_yes: bool) -> int:
    await db.open()
    try:
        lost = await db.read(lambda conn: undecryptable(conn, box))
        if not lost:
            print(f"Nothing to forget: the key from {origin} opens every stored secret." if box else
                  f"Nothing to forget: there is no key at {origin}, and no stored secret needs one.")
            return 0
        print(f"These stored secrets cannot be decrypted with the key from {origin}:" if box else
              f"These stored secrets cannot be decrypted: there is no key at {origin}.")
        _print_secrets(lost)
        print("Forgetting them deactivates these credentials and drops these upstreams' client certificates.")
        if not assume_yes and not _confirmed():
            print("Nothing was changed.")
            return 1
        await db.transaction(lambda conn: forget(conn, lost))
        # The cleared secrets' old pages leave the WAL, as when a credential is deleted.
        await db.checkpoint()
        print(f"Forgot {len(lost)}. Enter them again once the proxy runs: registries edit ID --password-stdin, "
              "then registries activate ID; upstreams set ADDRESS --client-cert FILE --client-key FILE.")
        return 0
    finally:
        await db.close()


def _print_secrets(secrets: list[SealedSecret]) -> None:
    # Here, not at the top: the output helpers bring the admin client, which serve must not load.
    from proxy.cli.output import print_table, text

    print_table(("CREDENTIAL", "ADDRESS", "USERNAME", "SECRET"),
                [[secret.key if secret.table == "registries" else "-", text(secret.address), text(secret.username),
                  secret.what if secret.table == "registries" else f"{secret.what} (upstream)"]
                 for secret in secrets])


def _confirmed() -> bool:
    if not sys.stdin.isatty():
        print("registry-proxy: not a terminal to ask on; pass --yes to forget them", file=sys.stderr)
        return False
    try:
        return input("Forget them? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
