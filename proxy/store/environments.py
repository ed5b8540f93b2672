"""Environments (tenants) and their pull keys in the state database.

`default` exists from the first start and cannot be deleted: unprefixed,
unauthenticated pulls land there unless an operator says otherwise.
Environments and keys the config file declares are ``source: config``
rows, replaced at each start and refused to the admin API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.credentials.value_types import DEFAULT_ENVIRONMENT
from proxy.store.credentials import ManagedByConfig, NotFound
from proxy.store.db import Conn, Database, Row
from proxy.store.pullkeys import PullKeyRecord, hash_secret, verify_secret

__all__ = ["AlreadyExists", "EnvironmentRecord", "EnvironmentStore", "InUse", "Protected"]

log = logging.getLogger(__name__)


class AlreadyExists(Exception):
    pass


class Protected(Exception):
    """`default` is where anonymous pulls land unless configured otherwise; it is never deleted."""


class InUse(Exception):
    """An environment still owns credentials or keys; ``str()`` says how many."""


class DeclaredKey(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def secret(self) -> str: ...


class DeclaredEnvironment(Protocol):
    """An environment as the config file declares it."""

    @property
    def name(self) -> str: ...
    @property
    def anonymous_pull(self) -> bool: ...
    @property
    def anonymous_from(self) -> tuple[str, ...]: ...
    @property
    def keys(self) -> Sequence[DeclaredKey]: ...


@dataclass(frozen=True)
class EnvironmentRecord:
    name: str
    anonymous_pull: bool
    anonymous_from: tuple[str, ...]
    source: str
    created: float
    updated: float


class EnvironmentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[EnvironmentRecord]:
        rows = await self._db.read(lambda c: c.execute("SELECT * FROM environments ORDER BY name").fetchall())
        return [_environment(row) for row in rows]

    async def keys(self) -> list[PullKeyRecord]:
        rows = await self._db.read(lambda c: c.execute("SELECT * FROM pull_keys ORDER BY created, id").fetchall())
        return [_key(row) for row in rows]

    async def add(self, name: str, *, anonymous_pull: bool, anonymous_from: tuple[str, ...]) -> EnvironmentRecord:
        def insert(conn: Conn) -> Row:
            if conn.execute("SELECT 1 FROM environments WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(name)
            now = time.time()
            conn.execute("INSERT INTO environments (name, anonymous_pull, anonymous_from, source, created, updated)"
                         " VALUES (?, ?, ?, 'api', ?, ?)", (name, int(anonymous_pull), json.dumps(anonymous_from),
                                                           now, now))
            return _row(conn, name)

        return _environment(await self._db.transaction(insert))

    async def update(self, name: str, *, anonymous_pull: bool, anonymous_from: tuple[str, ...]) -> EnvironmentRecord:
        def change(conn: Conn) -> Row:
            _editable(conn, name)
            conn.execute("UPDATE environments SET anonymous_pull = ?, anonymous_from = ?, updated = ? WHERE name = ?",
                         (int(anonymous_pull), json.dumps(anonymous_from), time.time(), name))
            return _row(conn, name)

        return _environment(await self._db.transaction(change))

    async def delete(self, name: str, *, force: bool) -> None:
        """Remove it; with ``force``, its credentials and keys too, else InUse while it has any."""

        def remove(conn: Conn) -> None:
            if name == DEFAULT_ENVIRONMENT:
                raise Protected(name)
            _editable(conn, name)
            credentials = _one(conn.execute("SELECT count(*) FROM registries WHERE environment = ?", (name,)).fetchone())[0]
            keys = _one(conn.execute("SELECT count(*) FROM pull_keys WHERE environment = ?", (name,)).fetchone())[0]
            if (credentials or keys) and not force:
                raise InUse(f"{credentials} registry credential(s) and {keys} pull key(s)")
            conn.execute("DELETE FROM registries WHERE environment = ?", (name,))
            conn.execute("DELETE FROM environments WHERE name = ?", (name,))

        await self._db.transaction(remove)
        await self._db.checkpoint()  # the deleted credentials' secrets leave the WAL

    async def add_key(self, environment: str, key_id: str, secret: str) -> PullKeyRecord:
        hashed = await self._hash(secret)

        def insert(conn: Conn) -> Row:
            _row(conn, environment)
            if conn.execute("SELECT 1 FROM pull_keys WHERE id = ?", (key_id,)).fetchone():
                raise AlreadyExists(key_id)
            conn.execute("INSERT INTO pull_keys (id, environment, hash, source, created) VALUES (?, ?, ?, 'api', ?)",
                         (key_id, environment, hashed, time.time()))
            return _one(conn.execute("SELECT * FROM pull_keys WHERE id = ?", (key_id,)).fetchone())

        return _key(await self._db.transaction(insert))

    async def delete_key(self, key_id: str) -> None:
        def remove(conn: Conn) -> None:
            row = conn.execute("SELECT source FROM pull_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(key_id)
            if row["source"] == "config":
                raise ManagedByConfig(key_id)
            conn.execute("DELETE FROM pull_keys WHERE id = ?", (key_id,))

        await self._db.transaction(remove)

    async def record_use(self, used: Mapping[str, float]) -> None:
        """Last-used times, written in one batch rather than once a request."""
        def write(conn: Conn) -> None:
            for key, when in used.items():
                conn.execute("UPDATE pull_keys SET last_used = ? WHERE id = ?", (when, key))

        await self._db.transaction(write)

    async def sync_config(self, wanted: Mapping[str, DeclaredEnvironment]) -> None:
        """Make the file's environments and keys the ``source: config`` rows; a kept key is rehashed only if changed."""
        existing = {key.id: key for key in await self.keys()}
        hashes = {}
        for env in wanted.values():
            for key in env.keys:
                old = existing.get(key.id)
                if old is not None and old.source == "config" and await asyncio.to_thread(
                        verify_secret, key.secret, old.hash):
                    hashes[key.id] = old.hash
                else:
                    hashes[key.id] = await self._hash(key.secret)

        declared = {key.id for env in wanted.values() for key in env.keys}
        for key_id in declared:
            old = existing.get(key_id)
            if old is not None and old.source == "api":
                log.warning("pull key %s of environment %s, made through the admin API, is replaced by the config "
                            "file's key of the same id", key_id, old.environment)

        def sync(conn: Conn) -> None:
            now = time.time()
            for row in conn.execute("SELECT id FROM pull_keys WHERE source = 'config'").fetchall():
                if row["id"] not in declared:
                    conn.execute("DELETE FROM pull_keys WHERE id = ?", (row["id"],))
            for row in conn.execute("SELECT name FROM environments WHERE source = 'config'").fetchall():
                if row["name"] not in wanted:
                    # Back to the API's hands, with what it owns; default never goes away.
                    conn.execute("UPDATE environments SET source = 'api', updated = ? WHERE name = ?",
                                 (now, row["name"]))
            for env in wanted.values():
                conn.execute(
                    "INSERT INTO environments (name, anonymous_pull, anonymous_from, source, created, updated)"
                    " VALUES (?, ?, ?, 'config', ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " anonymous_pull = excluded.anonymous_pull, anonymous_from = excluded.anonymous_from,"
                    " source = 'config', updated = excluded.updated",
                    (env.name, int(env.anonymous_pull), json.dumps(env.anonymous_from), now, now))
                for key in env.keys:
                    # Kept across starts, with when it was made and last used; the
                    # file wins over a key the API made with the same id.
                    conn.execute("INSERT INTO pull_keys (id, environment, hash, source, created) VALUES"
                                 " (?, ?, ?, 'config', ?) ON CONFLICT (id) DO UPDATE SET"
                                 " environment = excluded.environment, hash = excluded.hash, source = 'config'",
                                 (key.id, env.name, hashes[key.id], now))

        await self._db.transaction(sync)

    @staticmethod
    async def _hash(secret: str) -> str:
        # scrypt takes tens of milliseconds: never on the event loop.
        return await asyncio.to_thread(hash_secret, secret)


def _row(conn: Conn, name: str) -> Row:
    return _one(conn.execute("SELECT * FROM environments WHERE name = ?", (name,)).fetchone(), name)


def _one(row: Row | None, name: str = "") -> Row:
    if row is None:
        raise NotFound(name)
    return row


def _editable(conn: Conn, name: str) -> Row:
    row = _row(conn, name)
    if row["source"] == "config":
        raise ManagedByConfig(name)
    return row


def _environment(row: Row) -> EnvironmentRecord:
    return EnvironmentRecord(row["name"], bool(row["anonymous_pull"]), tuple(json.loads(row["anonymous_from"])),
                             row["source"], row["created"], row["updated"])


def _key(row: Row) -> PullKeyRecord:
    return PullKeyRecord(row["id"], row["environment"], row["source"], row["created"], row["last_used"], row["hash"])
