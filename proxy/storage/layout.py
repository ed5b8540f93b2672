"""Where the filesystem cache keeps things on disk.

::

    <data_dir>/cache/
      blobs/<alg>/<hex[:2]>/<hex>        verified blob content; only ever created by
                                         rename after the digest was checked, so a
                                         file here is never partial
      manifests/<alg>/<hex[:2]>/<hex>    verified manifests, the same way
      tmp/<random>                       downloads in progress; removed at start
      quarantine/<blobs|manifests>/<alg>/<hex>
                                         content that failed ``cache verify``: never
                                         served, kept for inspection, the operator's to delete
      repos/<registry>/<repository>/     what one upstream repository is known to hold
        _blobs/<alg>/<hex>               link: the blob was seen here, with which access
        _manifests/<alg>/<hex>           link: JSON media type and access
        _tags/<tag>                      JSON: digest, media type, size, checked_at, access
        _tags/@referrers@<alg>-<hex>[@<filter hash>]
                                         the same for a referrers list, kept as a manifest
                                         ("@" never occurs in a tag)
      repos/<registry>/_blobs/<alg>/<hex>  marker: some repository of this registry holds
                                         the blob (repository names never start with "_")

Content is shared between repositories, but it is served for a repository only
through that repository's links, so one registry's content is never served for
another registry's name, even when the default registry changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind

__all__ = ["Layout"]


class Layout:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "cache"
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.tmp = self.root / "tmp"
        self.repos = self.root / "repos"
        self.quarantine = self.root / "quarantine"

    def create(self) -> None:
        for path in (self.blobs, self.manifests, self.tmp, self.repos):
            path.mkdir(parents=True, exist_ok=True)

    def content_root(self, kind: ContentKind) -> Path:
        return self.manifests if kind is ContentKind.MANIFEST else self.blobs

    def content(self, kind: ContentKind, digest: Digest) -> Path:
        return self.content_root(kind) / digest.algorithm / digest.hex[:2] / digest.hex

    def quarantined(self, kind: ContentKind, digest: Digest) -> Path:
        return self.quarantine / self.content_root(kind).name / digest.algorithm / digest.hex

    def repo(self, target: Target) -> Path:
        # Names were checked against the grammar (no "..", no empty parts)
        # before they get here, so joining them is safe.
        return self.repos / target.registry / target.repository

    def blob_link(self, target: Target, digest: Digest) -> Path:
        return self.repo(target) / "_blobs" / digest.algorithm / digest.hex

    def registry_blob(self, registry: str, digest: Digest) -> Path:
        return self.repos / registry / "_blobs" / digest.algorithm / digest.hex

    def manifest_link(self, target: Target, digest: Digest) -> Path:
        return self.repo(target) / "_manifests" / digest.algorithm / digest.hex

    def tag(self, target: Target, tag: str) -> Path:
        return self.repo(target) / "_tags" / tag

    def temp_file(self) -> tuple[int, Path]:
        """A new temp file, open for reading and writing. Blocking."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="part-")
        return fd, Path(name)
