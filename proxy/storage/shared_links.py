"""Per-repository links and tags of the S3 storage, in PostgreSQL: ``storage.index``'s records, shared by every replica.

Their meaning is ``storage.index``'s: a link records under which access a
repository was seen to hold content, and content is served for a repository
only through its links. Nothing is remembered in memory here, as another
replica may write any of them at any time; each read is one indexed query.
The tables are created by ``shared_index.migrate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.reference import Digest, InvalidReference, Target, parse_digest
from proxy.storage.base import ManifestLink, TagRecord

if TYPE_CHECKING:
    from proxy.postgres.pool import PgConnection, PgPool

__all__ = ["SharedLinks"]


class SharedLinks:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def blob_access(self, target: Target, digest: Digest) -> str | None:
        def work(conn: PgConnection) -> str | None:
            row = conn.execute("SELECT access FROM cache_blob_links WHERE registry = ? AND repository = ? AND digest = ?",
                               (target.registry, target.repository, str(digest))).fetchone()
            return None if row is None else str(row[0])
        return await self._pool.transaction(work)

    async def link_blob(self, target: Target, digest: Digest, access: str) -> None:
        def work(conn: PgConnection) -> None:
            conn.execute("INSERT INTO cache_blob_links (registry, repository, digest, access) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (registry, repository, digest) DO UPDATE SET access = EXCLUDED.access "
                         "WHERE cache_blob_links.access <> EXCLUDED.access",
                         (target.registry, target.repository, str(digest), access))
            conn.execute("INSERT INTO cache_registry_blobs (registry, digest) VALUES (?, ?) ON CONFLICT DO NOTHING",
                         (target.registry, str(digest)))
        await self._pool.transaction(work)

    async def registry_holds(self, registry: str, digest: Digest) -> bool:
        def work(conn: PgConnection) -> bool:
            return conn.execute("SELECT 1 FROM cache_registry_blobs WHERE registry = ? AND digest = ?",
                                (registry, str(digest))).fetchone() is not None
        return await self._pool.transaction(work)

    async def manifest(self, target: Target, digest: Digest) -> ManifestLink | None:
        def work(conn: PgConnection) -> ManifestLink | None:
            row = conn.execute("SELECT media_type, access FROM cache_manifest_links "
                               "WHERE registry = ? AND repository = ? AND digest = ?",
                               (target.registry, target.repository, str(digest))).fetchone()
            return None if row is None else ManifestLink(str(row[0]), str(row[1]))
        return await self._pool.transaction(work)

    async def link_manifest(self, target: Target, digest: Digest, link: ManifestLink) -> None:
        def work(conn: PgConnection) -> None:
            conn.execute("INSERT INTO cache_manifest_links (registry, repository, digest, media_type, access) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (registry, repository, digest) DO UPDATE "
                         "SET media_type = EXCLUDED.media_type, access = EXCLUDED.access",
                         (target.registry, target.repository, str(digest), link.media_type, link.access))
        await self._pool.transaction(work)

    async def tag(self, target: Target, tag: str) -> TagRecord | None:
        def work(conn: PgConnection) -> TagRecord | None:
            row = conn.execute("SELECT digest, media_type, size, checked_at, access FROM cache_tags "
                               "WHERE registry = ? AND repository = ? AND tag = ?",
                               (target.registry, target.repository, tag)).fetchone()
            if row is None:
                return None
            try:
                parse_digest(str(row[0]))
            except InvalidReference:
                return None  # read as an unknown tag, fetched again
            return TagRecord(str(row[0]), str(row[1]), int(row[2]), float(row[3]), str(row[4]))
        return await self._pool.transaction(work)

    async def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        def work(conn: PgConnection) -> None:
            conn.execute("INSERT INTO cache_tags (registry, repository, tag, digest, media_type, size, checked_at, access) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (registry, repository, tag) DO UPDATE SET "
                         "digest = EXCLUDED.digest, media_type = EXCLUDED.media_type, size = EXCLUDED.size, "
                         "checked_at = EXCLUDED.checked_at, access = EXCLUDED.access",
                         (target.registry, target.repository, tag, record.digest, record.media_type, record.size,
                          record.checked_at, record.access))
        await self._pool.transaction(work)
