"""Per-repository knowledge: which blobs and manifests a repository holds, and its tags.

A link is written only after the repository was seen to hold the content
upstream, so serving through links never hands one repository's (or one
registry's) content to a name that could not reach it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from proxy.reference import Digest, Target
from proxy.storage.layout import Layout, atomic_write

__all__ = ["RepositoryIndex", "TagRecord"]


@dataclass(frozen=True)
class TagRecord:
    digest: str
    media_type: str
    size: int
    checked_at: float

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.checked_at


class RepositoryIndex:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def has_blob(self, target: Target, digest: Digest) -> bool:
        return self.layout.blob_link(target, digest).exists()

    def link_blob(self, target: Target, digest: Digest) -> None:
        path = self.layout.blob_link(target, digest)
        if not path.exists():
            atomic_write(path, b"", self.layout.tmp)

    def manifest_media_type(self, target: Target, digest: Digest) -> str | None:
        try:
            return self.layout.manifest_link(target, digest).read_text() or None
        except FileNotFoundError:
            return None

    def link_manifest(self, target: Target, digest: Digest, media_type: str) -> None:
        atomic_write(self.layout.manifest_link(target, digest), media_type.encode(), self.layout.tmp)

    def tag(self, target: Target, tag: str) -> TagRecord | None:
        try:
            data = json.loads(self.layout.tag(target, tag).read_bytes())
            return TagRecord(**data)
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        atomic_write(self.layout.tag(target, tag), json.dumps(asdict(record)).encode(), self.layout.tmp)
