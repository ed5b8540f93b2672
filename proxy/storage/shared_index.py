"""What the bucket holds, and what each repository was seen to hold, in PostgreSQL, shared by every replica.

The same records as the filesystem cache's ``content`` accounting and
``index`` links, with the same meaning (see ``storage.index``; the links are
``shared_links``), in tables of their own with their own schema version
(``cache_schema``, migrated under an advisory lock, so replicas that start
together do not race)::

    cache_content         kind, digest -> size, created, last_access
                          a row exists only for an object complete and verified in the bucket
    cache_blob_links      registry, repository, digest -> access
    cache_registry_blobs  registry, digest: some repository of the registry holds the blob
    cache_manifest_links  registry, repository, digest -> media_type, access
    cache_tags            registry, repository, tag -> digest, media_type, size, checked_at, access
    cache_deletions       kind, digest -> due_at: an object to delete from the bucket once due, unless added again

``size`` must answer from memory, so each replica keeps the map of
``cache_content`` kind and digest to size, loaded at start and kept current
by NOTIFY on ``registry_proxy_content``: "+kind:digest:size" when a row is
added, "-kind:digest" when one goes. After the listener reconnects (it may
have missed some) the map is loaded again. Lookups count as use for
eviction: they are gathered in memory and written every few seconds in one
UPDATE, never one write per hit.

Content that goes (evicted, or dropped) leaves ``cache_content`` at once,
so no replica hands it out any more, but its object is only scheduled for
deletion in ``cache_deletions``: URLs presigned before then, and reads
under way, keep working until it is due. Adding the content again cancels
its deletion in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from proxy.postgres.migrate import migrate as migrate_schema
from proxy.reference import Digest, InvalidReference, parse_digest
from proxy.storage.base import ContentKind

if TYPE_CHECKING:
    from proxy.postgres.pool import PgConnection, PgPool

__all__ = ["CHANNEL", "SharedIndex", "migrate"]

log = logging.getLogger(__name__)

CHANNEL = "registry_proxy_content"

_Key = tuple[ContentKind, Digest]

# Each entry brings the schema from the version before it to its own (1, 2, ...); never edit one, add one.
_MIGRATIONS = [
    """
    CREATE TABLE cache_content (
        kind text NOT NULL, digest text NOT NULL, size bigint NOT NULL,
        created double precision NOT NULL, last_access double precision NOT NULL,
        PRIMARY KEY (kind, digest));
    CREATE INDEX cache_content_lru ON cache_content (last_access);
    CREATE TABLE cache_blob_links (
        registry text NOT NULL, repository text NOT NULL, digest text NOT NULL, access text NOT NULL,
        PRIMARY KEY (registry, repository, digest));
    CREATE TABLE cache_registry_blobs (
        registry text NOT NULL, digest text NOT NULL, PRIMARY KEY (registry, digest));
    CREATE TABLE cache_manifest_links (
        registry text NOT NULL, repository text NOT NULL, digest text NOT NULL,
        media_type text NOT NULL, access text NOT NULL, PRIMARY KEY (registry, repository, digest));
    CREATE TABLE cache_tags (
        registry text NOT NULL, repository text NOT NULL, tag text NOT NULL, digest text NOT NULL,
        media_type text NOT NULL, size bigint NOT NULL, checked_at double precision NOT NULL,
        access text NOT NULL, PRIMARY KEY (registry, repository, tag));
    """,
    """
    CREATE TABLE cache_deletions (
        kind text NOT NULL, digest text NOT NULL, due_at double precision NOT NULL, PRIMARY KEY (kind, digest));
    CREATE INDEX cache_deletions_due ON cache_deletions (due_at);
    """,
]

# Rows evicted are moved to the deletions; a key evicted twice keeps the later of its times.
_EVICT = (
    "WITH gone AS ("
    " DELETE FROM cache_content WHERE last_access <= ? AND (kind, digest) IN ("
    "  SELECT kind, digest FROM (SELECT kind, digest, last_access, sum(size) OVER"
    "   (ORDER BY last_access DESC, kind, digest) AS newer FROM cache_content) AS ranked"
    "  WHERE newer > ? AND last_access <= ?)"
    " RETURNING kind, digest)"
    " INSERT INTO cache_deletions (kind, digest, due_at) SELECT kind, digest, ? FROM gone"
    " ON CONFLICT (kind, digest) DO UPDATE SET due_at = greatest(cache_deletions.due_at, EXCLUDED.due_at)"
    " RETURNING kind, digest")
_DUE = ("SELECT kind, digest FROM cache_deletions AS d WHERE due_at <= ?"
        " AND NOT EXISTS (SELECT 1 FROM cache_content AS c WHERE c.kind = d.kind AND c.digest = d.digest)")
_AMONG = " AND (kind, digest) IN (SELECT * FROM unnest(?::text[], ?::text[]))"


class SharedIndex:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool
        self._sizes: dict[_Key, int] = {}
        self.used = 0
        self.counts: Counter[ContentKind] = Counter()
        self._touched: dict[_Key, float] = {}
        self._reloading: list[str] | None = None  # notifications heard while a reload runs
        self._reload: asyncio.Task[None] | None = None
        self._again = False  # a reload was asked for while one ran
        self._waiters: dict[Digest, list[asyncio.Event]] = {}

    async def open(self) -> None:
        await self._pool.transaction(migrate)
        await self.reload()

    async def close(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
            await asyncio.gather(self._reload, return_exceptions=True)

    # The content map.

    def size(self, kind: ContentKind, digest: Digest) -> int | None:
        size = self._sizes.get((kind, digest))
        if size is not None:
            self._touched[(kind, digest)] = time.time()
        return size

    def holds(self, kind: ContentKind, digest: Digest) -> bool:
        """Whether the bucket holds it; not a use."""
        return (kind, digest) in self._sizes

    def listing(self) -> list[tuple[ContentKind, Digest, int]]:
        return [(kind, digest, size) for (kind, digest), size in self._sizes.items()]

    async def add(self, kind: ContentKind, digest: Digest, size: int) -> None:
        """Record content now complete and verified in the bucket, and tell every replica."""
        def work(conn: PgConnection) -> None:
            now = time.time()
            conn.execute("INSERT INTO cache_content (kind, digest, size, created, last_access) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (kind, digest) DO UPDATE SET size = EXCLUDED.size, last_access = EXCLUDED.last_access",
                         (kind.value, str(digest), size, now, now))
            # After the insert, which waits for an eviction of the row under way: its deletion is seen, and cancelled.
            conn.execute("DELETE FROM cache_deletions WHERE kind = ? AND digest = ?", (kind.value, str(digest)))
            conn.notify(CHANNEL, f"+{kind.value}:{digest}:{size}")
        await self._pool.transaction(work)
        self._set((kind, digest), size)

    async def lookup(self, kind: ContentKind, digest: Digest) -> int | None:
        """Its row's size, read from PostgreSQL rather than the map, and recorded in the map if there; not a use."""
        row = await self._pool.transaction(lambda conn: conn.execute(
            "SELECT size FROM cache_content WHERE kind = ? AND digest = ?", (kind.value, str(digest))).fetchone())
        if row is None:
            return None
        self._set((kind, digest), int(row[0]))
        return int(row[0])

    async def remove(self, keys: list[_Key]) -> None:
        """Forget content (found corrupt, or gone from the bucket), tell every replica, and have its object deleted now."""
        def work(conn: PgConnection) -> None:
            now = time.time()
            for kind, digest in keys:
                conn.execute("DELETE FROM cache_content WHERE kind = ? AND digest = ?", (kind.value, str(digest)))
                conn.execute("INSERT INTO cache_deletions (kind, digest, due_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (kind, digest) DO UPDATE SET due_at = least(cache_deletions.due_at, EXCLUDED.due_at)",
                             (kind.value, str(digest), now))
                conn.notify(CHANNEL, f"-{kind.value}:{digest}")
        await self._pool.transaction(work)
        for key in keys:
            self._unset(key)

    async def evict(self, max_size: int, *, grace: float, recent: float) -> list[_Key]:
        """Remove the rows of the least recently used content beyond ``max_size``, but none used in the last
        ``recent`` seconds (its use may not be flushed yet); their objects are deleted ``grace`` seconds later.
        What was removed."""
        def work(conn: PgConnection) -> list[_Key]:
            now = time.time()
            rows = conn.execute(_EVICT, (now - recent, max_size, now - recent, now + grace)).fetchall()
            gone = [(ContentKind(row[0]), parse_digest(row[1])) for row in rows]
            for kind, digest in gone:
                conn.notify(CHANNEL, f"-{kind.value}:{digest}")
            return gone
        gone = await self._pool.transaction(work)
        for key in gone:
            self._unset(key)
        return gone

    async def due_deletions(self, limit: int, among: list[_Key] | None = None) -> list[_Key]:
        """Objects whose deletion is due and whose content was not added again since (of ``among``, if given)."""
        sql = f"{_DUE} ORDER BY kind, digest LIMIT ?"
        params: tuple[object, ...] = (time.time(), limit)
        if among is not None:
            sql = f"{_DUE}{_AMONG} ORDER BY kind, digest LIMIT ?"
            params = (time.time(), [k.value for k, _ in among], [str(d) for _, d in among], limit)
        rows = await self._pool.transaction(lambda conn: conn.execute(sql, params).fetchall())
        return [(ContentKind(row[0]), parse_digest(row[1])) for row in rows]

    async def deleted(self, keys: list[_Key]) -> None:
        """The objects of these due deletions are gone from the bucket."""
        if not keys:
            return
        params = (time.time(), [k.value for k, _ in keys], [str(d) for _, d in keys])
        await self._pool.transaction(
            lambda conn: conn.execute(f"DELETE FROM cache_deletions WHERE due_at <= ?{_AMONG}", params))

    async def flush_access(self) -> None:
        """Write the access times gathered since the last flush, in one statement."""
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        # In one order on every replica, so two flushes (or a flush and an eviction) never wait on each other's rows.
        order = sorted(touched, key=lambda key: (key[0].value, str(key[1])))

        def work(conn: PgConnection) -> None:
            conn.execute("UPDATE cache_content AS c SET last_access = greatest(c.last_access, t.at) "
                         "FROM unnest(?::text[], ?::text[], ?::double precision[]) AS t(kind, digest, at) "
                         "WHERE c.kind = t.kind AND c.digest = t.digest",
                         ([k.value for k, _ in order], [str(d) for _, d in order], [touched[key] for key in order]))
        try:
            await self._pool.transaction(work)
        except BaseException:
            # Kept for the next flush, unless newer ones came meanwhile.
            for key, at in touched.items():
                self._touched.setdefault(key, at)
            raise

    async def committed(self, digest: Digest) -> None:
        """Return once this replica hears that ``digest`` is a blob in the bucket (cancel to stop waiting)."""
        if (ContentKind.BLOB, digest) in self._sizes:
            return
        event = asyncio.Event()
        self._waiters.setdefault(digest, []).append(event)
        try:
            await event.wait()
        finally:
            waiting = self._waiters.get(digest, [])
            if event in waiting:
                waiting.remove(event)
            if not waiting:
                self._waiters.pop(digest, None)

    def on_notify(self, channel: str, payload: str) -> None:
        """The listener's callback: one row added or removed, or "" when anything may have changed."""
        if not payload:
            if self._reload is None or self._reload.done():
                self._reload = asyncio.ensure_future(self._reload_logged())
            else:
                # The running one may have read the table before whatever this announces.
                self._again = True
            return
        if self._reloading is not None:
            self._reloading.append(payload)
        self._apply(payload)

    async def reload(self) -> None:
        self._reloading = []
        try:
            rows = await self._pool.transaction(
                lambda conn: conn.execute("SELECT kind, digest, size FROM cache_content").fetchall())
            sizes = {(ContentKind(row[0]), parse_digest(row[1])): int(row[2]) for row in rows}
            self._sizes, self.used, self.counts = {}, 0, Counter()
            for key, size in sizes.items():
                self._set(key, size)
            for payload in self._reloading:
                self._apply(payload)
        finally:
            self._reloading = None

    async def _reload_logged(self) -> None:
        again = True
        while again:
            self._again = False
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - the next reconnect tries again; the map serves meanwhile
                log.warning("cannot reload the index of the bucket's content: %s", exc)
            again = self._again

    def _apply(self, payload: str) -> None:
        try:
            sign, kind_name, rest = payload[0], *payload[1:].split(":", 1)
            if sign == "+":
                digest, size = rest.rsplit(":", 1)
                self._set((ContentKind(kind_name), parse_digest(digest)), int(size))
            elif sign == "-":
                self._unset((ContentKind(kind_name), parse_digest(rest)))
        except (ValueError, InvalidReference):
            log.warning("ignoring a malformed notification on %s: %r", CHANNEL, payload[:200])

    def _set(self, key: _Key, size: int) -> None:
        old = self._sizes.get(key)
        if old is None:
            self.counts[key[0]] += 1
        self.used += size - (old or 0)
        self._sizes[key] = size
        if key[0] is ContentKind.BLOB:
            for event in self._waiters.get(key[1], []):
                event.set()

    def _unset(self, key: _Key) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self.used -= size
            self.counts[key[0]] -= 1
        self._touched.pop(key, None)


def migrate(conn: PgConnection) -> None:
    """Bring the tables to the newest schema, one replica at a time."""
    migrate_schema(conn, "cache", _MIGRATIONS)
