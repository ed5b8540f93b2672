"""How to reach a registry address: endpoint URL, insecure mode, CA and client certificate, token realms;
and the alias clients may name it by (unique: one registry per alias).

Kept per address, not per credential: every credential for an address
talks to the same server. The client key is sealed like a password.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from proxy.store.crypto import SecretBox
from proxy.store.db import Conn, Database, Row

__all__ = ["UpstreamRecord", "UpstreamStore"]


@dataclass(frozen=True)
class UpstreamRecord:
    address: str
    endpoint: str | None = None
    insecure: bool = False
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    token_realms: tuple[str, ...] = ()
    alias: str | None = None
    source: str = "api"
    updated: float | None = None


class UpstreamStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def all(self) -> list[UpstreamRecord]:
        rows = await self._db.read(lambda c: c.execute("SELECT * FROM upstreams ORDER BY address").fetchall())
        return [self._record(row) for row in rows]

    async def put(self, record: UpstreamRecord) -> UpstreamRecord:
        sealed = None if record.client_key is None else self._box.seal(record.client_key, f"upstreams:{record.address}")

        def write(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO upstreams (address, endpoint, insecure, ca_cert, client_cert, client_key, token_realms,"
                " alias, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET"
                " endpoint = excluded.endpoint, insecure = excluded.insecure, ca_cert = excluded.ca_cert,"
                " client_cert = excluded.client_cert, client_key = excluded.client_key,"
                " token_realms = excluded.token_realms, alias = excluded.alias, updated = excluded.updated",
                (record.address, record.endpoint, int(record.insecure), record.ca_cert, record.client_cert, sealed,
                 json.dumps(list(record.token_realms)), record.alias, time.time()))

        await self._db.transaction(write)
        return record

    async def delete(self, address: str) -> bool:
        deleted = await self._db.transaction(
            lambda c: c.execute("DELETE FROM upstreams WHERE address = ?", (address,)).rowcount)
        await self._db.checkpoint()
        return bool(deleted)

    def _record(self, row: Row) -> UpstreamRecord:
        key = None if row["client_key"] is None else self._box.open(row["client_key"], f"upstreams:{row['address']}")
        return UpstreamRecord(address=row["address"], endpoint=row["endpoint"], insecure=bool(row["insecure"]),
                              ca_cert=row["ca_cert"], client_cert=row["client_cert"], client_key=key,
                              token_realms=tuple(json.loads(row["token_realms"])), alias=row["alias"],
                              updated=row["updated"])
