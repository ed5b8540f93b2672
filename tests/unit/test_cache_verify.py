"""Re-hashing the cache in place: mismatches are set aside and forgotten, everything else stays served."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from proxy.reference import Digest
from proxy.storage.base import ContentKind, VerifyReport
from proxy.storage.filesystem import FilesystemStorage

from .conftest import NewStorage

BLOB, MANIFEST = ContentKind.BLOB, ContentKind.MANIFEST



def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def add(storage: FilesystemStorage, data: bytes) -> Digest:
    """Cache a verified blob; how it arrived does not matter here."""
    digest = digest_of(data)
    await storage.put(BLOB, digest, data)
    return digest


async def read_all(storage: FilesystemStorage, digest: Digest) -> bytes | None:
    async with storage.open(BLOB, digest) as content:
        return None if content is None else b"".join([c async for c in content.span(0, content.size).pieces()])


def overwrite_in_place(path: Path) -> None:
    """Flip the first byte without changing the size or the inode, as a bad disk would."""
    with path.open("r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))


async def verify(storage: FilesystemStorage) -> VerifyReport:
    report = VerifyReport()
    await storage.verify(report)
    return report


async def test_corrupt_truncated_and_deleted_blobs_are_set_aside_forgotten_and_never_served(
        new_storage: NewStorage) -> None:
    storage = await new_storage()
    good_data, corrupt_data, short_data, gone_data = (bytes([n]) * (3 * 1024 * 1024 + n) for n in range(1, 5))
    good, corrupt, short, gone = [await add(storage, d) for d in (good_data, corrupt_data, short_data, gone_data)]
    manifest = b'{"schemaVersion": 2}'
    await storage.put(MANIFEST, digest_of(manifest), manifest)
    layout = storage.layout
    overwrite_in_place(layout.content(BLOB, corrupt))
    with layout.content(BLOB, short).open("r+b") as f:
        f.truncate(1000)
    layout.content(BLOB, gone).unlink()
    used_before = storage.stats().used

    report = await verify(storage)

    assert (report.objects, report.checked, report.mismatched, report.quarantined, report.missing,
            report.skipped) == (5, 4, 2, 2, 1, 0)
    assert report.bytes == len(good_data) + len(corrupt_data) + len(manifest)
    assert report.finished is not None and report.finished >= report.started
    # Set aside with the bytes it had, out of the content tree.
    quarantined = layout.quarantined(BLOB, corrupt)
    assert quarantined.read_bytes()[1:] == corrupt_data[1:] and quarantined.read_bytes()[0] != corrupt_data[0]
    assert layout.quarantined(BLOB, short).stat().st_size == 1000
    for digest in (corrupt, short, gone):
        assert not layout.content(BLOB, digest).exists()
        assert storage.size(BLOB, digest) is None
        assert await read_all(storage, digest) is None
    # Forgotten by the accounting: the next request fetches them again.
    stats = storage.stats()
    assert stats.blobs == 1 and stats.manifests == 1
    assert stats.used == used_before - len(corrupt_data) - len(short_data) - len(gone_data)
    assert await read_all(storage, good) == good_data
    assert await storage.read_small(MANIFEST, digest_of(manifest)) == manifest

    # Fetched again, it is content like any other, and a second run finds nothing wrong.
    assert await add(storage, corrupt_data) == corrupt
    assert await read_all(storage, corrupt) == corrupt_data
    again = await verify(storage)
    assert (again.objects, again.checked, again.mismatched, again.missing) == (3, 3, 0, 0)

    # A restart indexes the content tree only: what was set aside stays out.
    await storage.close()
    reopened = await new_storage()
    assert reopened.size(BLOB, short) is None and reopened.stats().blobs == 2


async def test_a_corrupt_manifest_leaves_the_memory_copy_too(new_storage: NewStorage) -> None:
    storage = await new_storage()
    manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    digest = digest_of(manifest)
    await storage.put(MANIFEST, digest, manifest)
    assert await storage.read_small(MANIFEST, digest) == manifest  # now answered from memory
    overwrite_in_place(storage.layout.content(MANIFEST, digest))

    report = await verify(storage)

    assert (report.checked, report.mismatched, report.quarantined) == (1, 1, 1)
    assert storage.layout.quarantined(MANIFEST, digest).exists()
    assert await storage.read_small(MANIFEST, digest) is None
    assert storage.stats().manifests == 0 and storage.stats().used == 0


async def test_a_blob_being_read_is_hashed_from_its_own_descriptor_and_the_reader_finishes(
        new_storage: NewStorage) -> None:
    storage = await new_storage()
    data = os.urandom(2 * 1024 * 1024)
    digest = await add(storage, data)
    path = storage.layout.content(BLOB, digest)
    async with storage.open(BLOB, digest) as content:
        assert content is not None
        reader = content.span(0, content.size).pieces()
        first = await reader.__anext__()
        overwrite_in_place(path)
        report = await verify(storage)
        assert (report.mismatched, report.quarantined) == (1, 1)
        # The reader keeps its descriptor: moving the file does not cut it short.
        rest = b"".join([chunk async for chunk in reader])
        assert len(first) + len(rest) == len(data)
    assert storage.size(BLOB, digest) is None and not path.exists()


async def test_content_evicted_or_replaced_during_the_run_is_skipped_not_moved(new_storage: NewStorage,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    storage = await new_storage()
    evicted_data, replaced_data = b"e" * 5000, b"r" * 6000
    evicted, replaced = await add(storage, evicted_data), await add(storage, replaced_data)
    content = storage._content
    listing = content.listing()
    await content.drop(BLOB, evicted)  # gone from the accounting after the run listed it
    path = storage.layout.content(BLOB, replaced)
    overwrite_in_place(path)
    monkeypatch.setattr(content, "listing", lambda: listing)

    real_open = os.open

    def open_then_replace(name: str | Path, flags: int, *args: int) -> int:
        fd = real_open(name, flags, *args)
        if Path(name) == path:
            # A fresh, good copy lands by rename while the bad one is hashed.
            fresh = path.with_name("fresh")
            fresh.write_bytes(replaced_data)
            os.replace(fresh, path)
        return fd

    monkeypatch.setattr(os, "open", open_then_replace)
    report = await verify(storage)
    monkeypatch.undo()

    assert (report.objects, report.checked, report.skipped, report.mismatched) == (2, 0, 2, 0)
    assert not storage.layout.quarantined(BLOB, replaced).exists()
    assert await read_all(storage, replaced) == replaced_data
