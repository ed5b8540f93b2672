"""Durable state behind one small interface, in SQLite (the default) or PostgreSQL (``state.url``).

Stores run the same SQL on both: ``?`` placeholders, ``RETURNING id``,
``ON CONFLICT``, nothing either engine lacks. ``transaction`` commits before
the awaiting caller resumes, so anything the admin API acknowledged
survives a crash; a write that finds the disk full is rolled back whole and
raises ``StateFull``. ``watch`` reports changes other processes commit:
PostgreSQL's are shared by replicas; SQLite's belong to this process alone.

SQLite: one database used from one worker thread, migrated at open, with
``synchronous=FULL``; the database and its -wal and -shm files are mode 0600.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["MIGRATIONS", "Conn", "Cursor", "Database", "Row", "SqliteDatabase", "StateFull"]

T = TypeVar("T")

# Append only: each entry moves the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE registries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL,
        email TEXT NOT NULL DEFAULT '',
        username TEXT NOT NULL DEFAULT '',
        secret BLOB,
        active INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX registries_address ON registries (address);
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        updated REAL NOT NULL
    );
    """,
    """
    CREATE TABLE upstreams (
        address TEXT PRIMARY KEY,
        endpoint TEXT,
        insecure INTEGER NOT NULL DEFAULT 0,
        ca_cert TEXT,
        client_cert TEXT,
        client_key BLOB,
        updated REAL NOT NULL
    );
    """,
    """
    ALTER TABLE registries ADD COLUMN kind TEXT NOT NULL DEFAULT 'basic';
    ALTER TABLE registries ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE registries ADD COLUMN environment TEXT NOT NULL DEFAULT 'default';
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        anonymous_pull INTEGER NOT NULL,
        anonymous_from TEXT NOT NULL DEFAULT '[]',
        source TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    INSERT INTO environments (name, anonymous_pull, source, created, updated)
        VALUES ('default', 1, 'api', CAST(strftime('%s', 'now') AS REAL), CAST(strftime('%s', 'now') AS REAL));
    CREATE TABLE pull_keys (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL REFERENCES environments (name) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        source TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL
    );
    CREATE INDEX pull_keys_environment ON pull_keys (environment);
    """,
    """
    ALTER TABLE upstreams ADD COLUMN token_realms TEXT NOT NULL DEFAULT '[]';
    """,
    """
    ALTER TABLE upstreams ADD COLUMN alias TEXT;
    CREATE UNIQUE INDEX upstreams_alias ON upstreams (alias);
    """,
)


class StateFull(Exception):
    """A write found the state's disk full; nothing of it was kept."""


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Row(Protocol):
    """A row by position or by column name: sqlite3.Row, or proxy.postgres's."""

    def __getitem__(self, key: int | str) -> Any: ...


class Cursor(Protocol):
    def fetchone(self) -> Row | None: ...
    def fetchall(self) -> list[Row]: ...
    @property
    def rowcount(self) -> int: ...


class Conn(Protocol):
    """A connection inside a transaction, as stores use it: sqlite3's, or proxy.postgres's."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...


class Database(Protocol):
    description: str  # where the state is, for messages: a path, or a URL without its password

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def transaction(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` in one transaction, in a worker thread; committed when this returns."""

    async def read(self, work: Callable[[Conn], T]) -> T:
        """Run ``work``, which only reads, in a worker thread."""

    async def checkpoint(self) -> None:
        """Let go of old copies of deleted or replaced rows where the engine keeps them (SQLite's WAL)."""

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Until cancelled, call ``on_change`` (on the event loop) when another process may have changed the state."""


class SqliteDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)
        # One thread owns the connection: SQLite serialises writers anyway,
        # and the event loop never blocks on a commit.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._owner_only()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted secrets are overwritten on disk, not just unlinked from the b-tree.
        conn.execute("PRAGMA secure_delete=ON")
        self._conn = conn
        self._migrate(conn)

    def _owner_only(self) -> None:
        # The store holds sealed secrets and key hashes: readable by the
        # proxy's user only. SQLite gives the -wal and -shm files it creates
        # the database file's mode; ones left by an older version are fixed too.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, self.path.with_name(self.path.name + "-wal"),
                     self.path.with_name(self.path.name + "-shm")):
            try:
                os.chmod(path, 0o600)
            except FileNotFoundError:
                pass

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"the store at schema version {version} is newer than this registry-proxy")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def transaction(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` in one transaction; committed when this returns."""

        def run() -> T:
            conn = self.connection
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does): a second ROLLBACK would only fail.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if _disk_full(exc):
                    raise StateFull(f"the state database's disk is full ({self.path}): {exc}") from None
                raise

        return await self.run(run)

    async def checkpoint(self) -> None:
        await self.run(lambda: self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    async def read(self, work: Callable[[Conn], T]) -> T:
        return await self.run(lambda: work(self.connection))

    async def watch(self, on_change: Callable[[], None]) -> None:
        # Only this process writes to its SQLite file, and it reloads after its own writes.
        await asyncio.Event().wait()

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
