"""Per-repository knowledge: which blobs and manifests a repository holds, and its tags.

A link is written only after the repository was seen to hold the content
upstream, and it records under which access (which credential, or none) that
was seen. Serving through links therefore never hands one repository's (or
one registry's) content to a name that could not reach it, and content seen
with a credential that was since deactivated or deleted is revalidated
before it is served again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from proxy.reference import Digest, Target
from proxy.storage.layout import Layout, atomic_write

__all__ = ["ManifestLink", "RepositoryIndex", "TagRecord"]


@dataclass(frozen=True)
class TagRecord:
    digest: str
    media_type: str
    size: int
    checked_at: float
    access: str = ""

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.checked_at


@dataclass(frozen=True)
class ManifestLink:
    media_type: str
    access: str


class RepositoryIndex:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def blob_access(self, target: Target, digest: Digest) -> str | None:
        """The access the blob was last seen with here, or None if never."""
        try:
            return self.layout.blob_link(target, digest).read_text()
        except FileNotFoundError:
            return None

    def link_blob(self, target: Target, digest: Digest, access: str) -> None:
        if self.blob_access(target, digest) != access:
            atomic_write(self.layout.blob_link(target, digest), access.encode(), self.layout.tmp)

    def manifest(self, target: Target, digest: Digest) -> ManifestLink | None:
        try:
            return ManifestLink(**json.loads(self.layout.manifest_link(target, digest).read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def link_manifest(self, target: Target, digest: Digest, media_type: str, access: str) -> None:
        data = json.dumps(asdict(ManifestLink(media_type, access))).encode()
        atomic_write(self.layout.manifest_link(target, digest), data, self.layout.tmp)

    def tag(self, target: Target, tag: str) -> TagRecord | None:
        try:
            return TagRecord(**json.loads(self.layout.tag(target, tag).read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def set_tag(self, target: Target, tag: str, record: TagRecord) -> None:
        atomic_write(self.layout.tag(target, tag), json.dumps(asdict(record)).encode(), self.layout.tmp)
