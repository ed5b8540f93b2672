"""Versioned schemas in PostgreSQL, brought up to date by one replica at a time.

Each schema has a table ``<name>_schema`` whose one row is its version: how
many of its migrations ran. ``migrate`` runs the missing ones inside the
caller's transaction, under a transaction-scoped advisory lock, so replicas
that start together migrate once and the next one reads the version only
after the commit. A schema newer than this code knows (an older replica,
during a rollback) is refused rather than used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.postgres.locks import lock_key
from proxy.postgres.pool import PgUnavailable

if TYPE_CHECKING:
    from proxy.postgres.pool import PgConnection

__all__ = ["SchemaTooNew", "migrate"]

_NAME = re.compile(r"[a-z][a-z_]*")


class SchemaTooNew(PgUnavailable):
    """The database was migrated by a newer registry-proxy than this one."""


def migrate(conn: PgConnection, name: str, migrations: Sequence[str]) -> None:
    """Bring schema ``name`` to version ``len(migrations)``: entry i moves it from version i to i + 1, and its
    statements are separated by ``;``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a schema name: {name!r}")
    table = f"{name}_schema"
    conn.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(f"{name}-schema"),))
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version integer NOT NULL)")
    row = conn.execute(f"SELECT version FROM {table}").fetchone()
    version = 0 if row is None else int(row[0])
    if version > len(migrations):
        raise SchemaTooNew(f"the {name} tables in PostgreSQL are at schema version {version}, newer than this "
                           f"registry-proxy knows ({len(migrations)}): run the newer version, or a new database")
    for script in migrations[version:]:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
    if row is None:
        conn.execute(f"INSERT INTO {table} (version) VALUES (?)", (len(migrations),))
    elif version < len(migrations):
        conn.execute(f"UPDATE {table} SET version = ?", (len(migrations),))
