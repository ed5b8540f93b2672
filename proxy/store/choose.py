"""Which database holds the state: SQLite in the data directory, or PostgreSQL when ``state.url`` is set.

The PostgreSQL module (and through it psycopg) is imported only for a URL,
so the embedded default never loads it.
"""

from __future__ import annotations

from pathlib import Path

from proxy.store.db import Database, SqliteDatabase

__all__ = ["STATE_FILE", "state_database"]

STATE_FILE = "state.db"


def state_database(data_dir: Path, url: str | None) -> Database:
    """The state's database, not yet opened."""
    if url is None:
        return SqliteDatabase(data_dir / STATE_FILE)
    from proxy.store.postgres import PostgresDatabase

    return PostgresDatabase(url)
