"""Registry credentials: several per address, the newest active one in use."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.credentials.kinds import CredentialInput
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT
from proxy.store.crypto import SecretBox
from proxy.store.db import Conn, Cursor, Database, Row

__all__ = ["ManagedByConfig", "NotFound", "RegistryRecord", "RegistryStore", "in_use"]


class NotFound(Exception):
    pass


class ManagedByConfig(Exception):
    pass


@dataclass(frozen=True)
class RegistryRecord:
    id: int
    address: str
    email: str
    username: str
    active: bool
    source: str  # "api" or "config"
    created: float
    updated: float
    # The sealed secret: a password, an AWS secret access key or a Google key.
    password: str | None = field(default=None, repr=False)
    kind: str = "basic"  # "basic", "ecr" or "gcr"
    options: dict[str, Any] = field(default_factory=dict)  # non-secret, kind-specific
    environment: str = DEFAULT_ENVIRONMENT

    @property
    def state(self) -> str:
        return "active" if self.active else "inactive"


def in_use(records: list[RegistryRecord]) -> dict[tuple[str, str], RegistryRecord]:
    """The credential each environment's pulls use for each address: its most recently added active one."""
    chosen: dict[tuple[str, str], RegistryRecord] = {}
    for record in sorted(records, key=lambda r: (r.created, r.id)):
        if record.active:
            chosen[(record.environment, record.address)] = record
    return chosen


class RegistryStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def all(self) -> list[RegistryRecord]:
        rows = await self._db.read(lambda c: c.execute("SELECT * FROM registries ORDER BY id").fetchall())
        return [self._record(row) for row in rows]

    async def add(self, *, address: str, email: str, username: str, password: str | None,
                  kind: str = "basic", options: dict[str, Any] | None = None, source: str = "api",
                  environment: str = DEFAULT_ENVIRONMENT) -> RegistryRecord:
        def insert(conn: Conn) -> Row:
            if conn.execute("SELECT 1 FROM environments WHERE name = ?", (environment,)).fetchone() is None:
                raise NotFound(environment)
            now = time.time()
            record_id = _new_id(conn.execute(
                "INSERT INTO registries (address, email, username, active, source, created, updated, kind, options,"
                " environment) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?) RETURNING id",
                (address, email, username, source, now, now, kind, json.dumps(options or {}), environment)))
            self._set_secret(conn, record_id, password)
            return self._row(conn, record_id)

        return self._record(await self._db.transaction(insert))

    async def update(self, record_id: int, *, email: str, username: str, password: str | None,
                     options: dict[str, Any] | None = None) -> RegistryRecord:
        def change(conn: Conn) -> Row:
            row = self._editable(conn, record_id)
            conn.execute("UPDATE registries SET email = ?, username = ?, options = ?, updated = ? WHERE id = ?",
                         (email, username, json.dumps(options if options is not None else json.loads(row["options"])),
                          time.time(), record_id))
            self._set_secret(conn, record_id, password)
            return self._row(conn, record_id)

        record = self._record(await self._db.transaction(change))
        await self._db.checkpoint()  # the replaced secret's old pages leave the WAL
        return record

    async def set_active(self, record_id: int, active: bool) -> RegistryRecord:
        def change(conn: Conn) -> Row:
            self._editable(conn, record_id)
            conn.execute("UPDATE registries SET active = ?, updated = ? WHERE id = ?",
                         (int(active), time.time(), record_id))
            return self._row(conn, record_id)

        return self._record(await self._db.transaction(change))

    async def delete(self, record_id: int) -> RegistryRecord:
        def remove(conn: Conn) -> Row:
            row = self._editable(conn, record_id)
            conn.execute("DELETE FROM registries WHERE id = ?", (record_id,))
            return row

        row = await self._db.transaction(remove)
        # secure_delete zeroes the page, but the WAL still holds older copies
        # of it until a checkpoint: fold them away so the secret is gone.
        await self._db.checkpoint()
        return self._record(row, decrypt=False)

    async def sync_config(self, wanted: Mapping[tuple[str, str], CredentialInput]) -> None:
        """Make the config file's credentials, by (environment, address), the store's ``source: config`` rows."""

        def sync(conn: Conn) -> None:
            rows = conn.execute("SELECT * FROM registries WHERE source = 'config'").fetchall()
            existing = {(row["environment"], row["address"]): row for row in rows}
            now = time.time()
            for key, old in existing.items():
                if key not in wanted:
                    conn.execute("DELETE FROM registries WHERE id = ?", (old["id"],))
            for (environment, address), given in wanted.items():
                row = existing.get((environment, address))
                options = json.dumps(given.options)
                if row is None:
                    record_id = _new_id(conn.execute(
                        "INSERT INTO registries (address, email, username, active, source, created, updated, kind,"
                        " options, environment) VALUES (?, ?, ?, 1, 'config', ?, ?, ?, ?, ?) RETURNING id",
                        (address, given.email, given.username, now, now, given.kind, options, environment)))
                else:
                    record_id = row["id"]
                    conn.execute("UPDATE registries SET email = ?, username = ?, kind = ?, options = ?, active = 1,"
                                 " updated = ? WHERE id = ?",
                                 (given.email, given.username, given.kind, options, now, record_id))
                self._set_secret(conn, record_id, given.secret)

        await self._db.transaction(sync)
        await self._db.checkpoint()

    def _set_secret(self, conn: Conn, record_id: int, password: str | None) -> None:
        sealed = None if password is None else self._box.seal(password, f"registries:{record_id}")
        conn.execute("UPDATE registries SET secret = ? WHERE id = ?", (sealed, record_id))

    @staticmethod
    def _row(conn: Conn, record_id: int) -> Row:
        row = conn.execute("SELECT * FROM registries WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise NotFound(record_id)
        return row

    def _editable(self, conn: Conn, record_id: int) -> Row:
        row = self._row(conn, record_id)
        if row["source"] == "config":
            raise ManagedByConfig(record_id)
        return row

    def _record(self, row: Row, *, decrypt: bool = True) -> RegistryRecord:
        password = None
        if decrypt and row["secret"] is not None:
            password = self._box.open(row["secret"], f"registries:{row['id']}")
        return RegistryRecord(id=row["id"], address=row["address"], email=row["email"], username=row["username"],
                              active=bool(row["active"]), source=row["source"], created=row["created"],
                              updated=row["updated"], password=password, kind=row["kind"],
                              options=json.loads(row["options"]), environment=row["environment"])


def _new_id(inserted: Cursor) -> int:
    """The id an ``INSERT ... RETURNING id`` gave its row."""
    row = inserted.fetchone()
    if row is None:
        raise RuntimeError("INSERT ... RETURNING id gave no row")
    return int(row[0])
