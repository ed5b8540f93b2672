"""Per-repository knowledge: which blobs and manifests a repository holds, and its tags.

A link is written only after the repository was seen to hold the content
upstream, and it records under which access (which credential, or none) that
was seen. Serving through links therefore never hands one repository's (or
one registry's) content to a name that could not reach it, and content seen
with a credential that was since deactivated or deleted is revalidated
before it is served again.

Reads are answered from a bounded memory copy when they can: this process is
the only writer, and a warm pull reads several links per request.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

from proxy.reference import Digest, InvalidReference, Target, parse_digest
from proxy.storage.base import ManifestLink, TagRecord
from proxy.storage.files import IoPool, atomic_write
from proxy.storage.layout import Layout

__all__ = ["RepositoryIndex"]

_LEGACY_ACCESS = re.compile(r"cred:[0-9]+@[0-9.]+")


class RepositoryIndex:
    def __init__(self, layout: Layout, io: IoPool, *, remembered: int = 20_000) -> None:
        self.layout = layout
        self._io = io
        self._remembered = remembered
        # Path -> file content, or None where the file does not exist.
        self._memory: OrderedDict[Path, bytes | None] = OrderedDict()
        self._writes = 0

    async def blob_access(self, target: Target, digest: Digest) -> str | None:
        raw = await self._read(self.layout.blob_link(target, digest))
        if raw is None:
            return None
        if not raw.startswith(b"{"):
            # Before links were JSON they held a credential's access itself; an
            # empty one (anonymous, or a torn write: which, nobody can tell) says nothing.
            legacy = raw.decode(errors="replace")
            return legacy if _LEGACY_ACCESS.fullmatch(legacy) else None
        try:
            access = json.loads(raw)["access"]
        except (ValueError, TypeError, KeyError):
            # A link that is not whole says nothing: the blob is checked again.
            return None
        return access if isinstance(access, str) else None

    async def link_blob(self, target: Target, digest: Digest, access: str) -> None:
        if await self.blob_access(target, digest) != access:
            # JSON, so that no access (anonymous, "") is still a non-empty
            # file, and an empty or torn one reads as no link at all.
            await self._write(self.layout.blob_link(target, digest), json.dumps({"access": access}).encode())
        if not await self.registry_holds(target.registry, digest):
            await self._write(self.layout.registry_blob(target.registry, digest), b"")

    async def registry_holds(self, registry: str, digest: Digest) -> bool:
        return await self._read(self.layout.registry_blob(registry, digest)) is not None

    async def manifest(self, target: Target, digest: Digest) -> ManifestLink | None:
        raw = await self._read(self.layout.manifest_link(target, digest))
        try:
            link = None if raw is None else ManifestLink(**json.loads(raw))
        except (ValueError, TypeError):
            return None
        if link is None or not (isinstance(link.media_type, str) and isinstance(link.access, str)):
            return None
        return link

    async def link_manifest(self, target: Target, digest: Digest, link: ManifestLink) -> None:
        await self._write(self.layout.manifest_link(target, digest), json.dumps(asdict(link)).encode())

    async def tag(self, target: Target, tag: str) -> TagRecord | None:
        raw = await self._read(self.layout.tag(target, tag))
        try:
            record = None if raw is None else TagRecord(**json.loads(raw))
        except (ValueError, TypeError):
            return None
        # Damaged records read as unknown tags, which are fetched again.
        return record if record is not None and _whole(record) else None

    async def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        await self._write(self.layout.tag(target, tag), json.dumps(asdict(record)).encode())

    async def _read(self, path: Path) -> bytes | None:
        if path in self._memory:
            self._memory.move_to_end(path)
            return self._memory[path]
        writes = self._writes
        raw = await self._io.run(_read_file, path)
        if writes == self._writes:  # a write while reading may have made this stale
            self._remember(path, raw)
        return raw

    async def _write(self, path: Path, data: bytes) -> None:
        # Forgotten first: a failed write must not leave a remembered value the disk does not have.
        self._memory.pop(path, None)
        self._writes += 1
        await self._io.run(atomic_write, path, data, self.layout.tmp)
        self._remember(path, data)

    def _remember(self, path: Path, raw: bytes | None) -> None:
        self._memory[path] = raw
        self._memory.move_to_end(path)
        while len(self._memory) > self._remembered:
            self._memory.popitem(last=False)


def _read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _whole(record: TagRecord) -> bool:
    try:
        parse_digest(record.digest)
    except (InvalidReference, TypeError, AttributeError):
        return False
    numbers = (record.size, record.checked_at)
    return (isinstance(record.media_type, str) and isinstance(record.access, str)
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers))
