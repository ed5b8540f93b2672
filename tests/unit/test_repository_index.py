"""Repository links and tag records on disk: a damaged file reads as unknown, never as something else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy.reference import Digest, Target
from proxy.storage.base import ManifestLink, TagRecord
from proxy.storage.files import IoPool
from proxy.storage.index import RepositoryIndex
from proxy.storage.layout import Layout

APP = Target("registry.test", "team/app")
DIGEST = Digest("sha256", "a" * 64)


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[RepositoryIndex]:
    layout = Layout(tmp_path)
    layout.create()
    io = IoPool(2)
    yield RepositoryIndex(layout, io, remembered=0)  # nothing from memory: every read is the disk's
    io.close()


async def test_an_anonymous_link_is_not_an_empty_file(index: RepositoryIndex) -> None:
    await index.link_blob(APP, DIGEST, "")
    assert index.layout.blob_link(APP, DIGEST).read_bytes() != b""
    assert await index.blob_access(APP, DIGEST) == ""
    await index.link_blob(APP, DIGEST, "cred:1@2.0")
    assert await index.blob_access(APP, DIGEST) == "cred:1@2.0"


@pytest.mark.parametrize("damaged", [b"", b"{", b"cred:1@", b'{"access": 7}', b"[]", b'"x"'])
async def test_a_damaged_blob_link_is_no_link(index: RepositoryIndex, damaged: bytes) -> None:
    # An empty file is what a power loss can leave of an unsynced write.
    await index.link_blob(APP, DIGEST, "cred:1@2.0")
    index.layout.blob_link(APP, DIGEST).write_bytes(damaged)
    assert await index.blob_access(APP, DIGEST) is None


async def test_a_link_written_before_links_were_json_still_reads(index: RepositoryIndex) -> None:
    index.layout.blob_link(APP, DIGEST).parent.mkdir(parents=True)
    index.layout.blob_link(APP, DIGEST).write_bytes(b"cred:3@1764780000.123456")
    assert await index.blob_access(APP, DIGEST) == "cred:3@1764780000.123456"


GOOD_TAG = {"digest": f"sha256:{'b' * 64}", "media_type": "application/vnd.oci.image.manifest.v1+json",
            "size": 10, "checked_at": 1.5, "access": ""}


@pytest.mark.parametrize("change", [{"digest": 5}, {"digest": "sha256:xyz"}, {"size": "10"}, {"checked_at": None},
                                    {"media_type": ["a"]}, {"access": None}, {"extra": 1}, {"size": True}])
async def test_a_damaged_tag_record_is_an_unknown_tag(index: RepositoryIndex, change: dict[str, object]) -> None:
    await index.set_tag(APP, "1", TagRecord(**GOOD_TAG))  # type: ignore[arg-type]
    assert await index.tag(APP, "1") == TagRecord(**GOOD_TAG)  # type: ignore[arg-type]
    index.layout.tag(APP, "1").write_text(json.dumps({**GOOD_TAG, **change}))
    assert await index.tag(APP, "1") is None


@pytest.mark.parametrize("raw", [b"", b'{"media_type": 1, "access": ""}', b'{"media_type": "x"}', b"null"])
async def test_a_damaged_manifest_link_is_no_link(index: RepositoryIndex, raw: bytes) -> None:
    await index.link_manifest(APP, DIGEST, ManifestLink("application/vnd.oci.image.manifest.v1+json", ""))
    index.layout.manifest_link(APP, DIGEST).write_bytes(raw)
    assert await index.manifest(APP, DIGEST) is None
