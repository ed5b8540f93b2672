"""The filesystem cache: content by digest with LRU eviction, and per-repository links and tags."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from proxy.reference import Digest, Target
from proxy.storage.base import ContentKind, DigestMismatch, ManifestLink, StorageFull, TagRecord
from proxy.storage.filesystem import FilesystemStorage

from .conftest import NewStorage

QUAY = Target("quay.io", "org/app")
GHCR = Target("ghcr.io", "org/app")
BLOB, MANIFEST = ContentKind.BLOB, ContentKind.MANIFEST



def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def add(storage: FilesystemStorage, data: bytes) -> Digest:
    """Commit a blob the way a finished download does."""
    digest = digest_of(data)
    partial = await storage.begin_blob(digest)
    try:
        await partial.append([data])
        await partial.commit()
    finally:
        partial.close()
    return digest


async def read_all(storage: FilesystemStorage, digest: Digest) -> bytes | None:
    async with storage.open(BLOB, digest) as content:
        return None if content is None else b"".join([c async for c in content.span(0, content.size).pieces()])


def cached(storage: FilesystemStorage, digest: Digest, kind: ContentKind = BLOB) -> bool:
    return storage.layout.content(kind, digest).exists()


def disk_usage(storage: FilesystemStorage) -> int:
    roots = (storage.layout.blobs, storage.layout.manifests)
    return sum(p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file())


def temp_files(storage: FilesystemStorage) -> list[Path]:
    return list(storage.layout.tmp.iterdir())


async def test_commit_then_open_and_size(new_storage: NewStorage) -> None:
    storage = await new_storage()
    data = b"layer bytes" * 100
    digest = await add(storage, data)
    assert storage.size(BLOB, digest) == len(data)
    async with storage.open(BLOB, digest) as content:
        assert content is not None and content.size == len(data)
        assert b"".join([c async for c in content.span(5, 20).pieces()]) == data[5:20]
    assert await storage.read_small(BLOB, digest) == data
    assert temp_files(storage) == []


async def test_a_range_of_a_file_truncated_under_its_reader_fails_instead_of_spinning(new_storage: NewStorage) -> None:
    storage = await new_storage()
    data = os.urandom(100_000)
    partial = await storage.begin_blob(digest_of(data))
    await partial.append([data])
    range_ = partial.span(0, len(data))
    os.truncate(temp_files(storage)[0], 1000)

    async def read_out() -> bytes:
        return b"".join([c async for c in range_.pieces()])

    with pytest.raises(OSError, match="ended at byte 1000"):
        await asyncio.wait_for(read_out(), 5)
    await partial.discard()
    partial.close()


async def test_a_download_is_readable_while_it_grows_and_visible_only_once_committed(new_storage: NewStorage) -> None:
    storage = await new_storage()
    data = b"0123456789" * 10
    digest = digest_of(data)
    partial = await storage.begin_blob(digest)
    await partial.append([data[:25], data[25:40]])
    assert b"".join([c async for c in partial.span(10, 30).pieces()]) == data[10:30]
    assert storage.size(BLOB, digest) is None and not cached(storage, digest)
    await partial.append([data[40:]])
    await partial.commit()
    partial.close()
    assert await read_all(storage, digest) == data


async def test_content_that_does_not_match_its_digest_is_never_committed(new_storage: NewStorage) -> None:
    storage = await new_storage()
    digest = digest_of(b"what was promised")
    partial = await storage.begin_blob(digest)
    await partial.append([b"something else"])
    with pytest.raises(DigestMismatch):
        await partial.commit()
    await partial.discard()
    partial.close()
    assert storage.size(BLOB, digest) is None and not cached(storage, digest)
    assert temp_files(storage) == []


async def test_unknown_content_is_absent(new_storage: NewStorage) -> None:
    storage = await new_storage()
    missing = digest_of(b"never stored")
    assert storage.size(BLOB, missing) is None
    assert await storage.read_small(BLOB, missing) is None
    async with storage.open(BLOB, missing) as content:
        assert content is None


async def test_content_deleted_behind_our_back_is_forgotten(new_storage: NewStorage) -> None:
    storage = await new_storage()
    digest = await add(storage, b"x" * 10)
    storage.layout.content(BLOB, digest).unlink()
    assert await storage.read_small(BLOB, digest) is None
    assert storage.size(BLOB, digest) is None


async def test_a_cached_file_of_the_wrong_size_is_dropped(new_storage: NewStorage) -> None:
    storage = await new_storage()
    digest = await add(storage, b"y" * 100)
    storage.layout.content(BLOB, digest).write_bytes(b"y" * 60)  # truncated behind our back
    assert await read_all(storage, digest) is None
    assert storage.size(BLOB, digest) is None and not cached(storage, digest)


async def test_a_corrupt_manifest_is_dropped_on_read(new_storage: NewStorage) -> None:
    storage = await new_storage()
    manifest = b'{"schemaVersion":2}'
    digest = digest_of(manifest)
    await storage.put(MANIFEST, digest, manifest)
    storage.layout.content(MANIFEST, digest).write_bytes(b'{"schemaVersion":3}')  # same size, other bytes
    assert await storage.read_small(MANIFEST, digest) is None
    assert storage.size(MANIFEST, digest) is None and not cached(storage, digest, MANIFEST)


async def test_put_small_content_is_idempotent(new_storage: NewStorage) -> None:
    storage = await new_storage()
    manifest = b'{"schemaVersion":2}'
    digest = digest_of(manifest)
    await storage.put(MANIFEST, digest, manifest)
    await storage.put(MANIFEST, digest, manifest)
    assert await storage.read_small(MANIFEST, digest) == manifest
    assert storage.size(BLOB, digest) is None  # a manifest is not a blob of the same digest
    stats = storage.stats()
    assert (stats.manifests, stats.blobs) == (1, 0)
    assert stats.used == len(manifest) == disk_usage(storage)
    assert temp_files(storage) == []


async def test_start_removes_leftover_temp_files_and_indexes_existing_content(new_storage: NewStorage) -> None:
    first = await new_storage()
    kept = [await add(first, bytes([i]) * (10 + i)) for i in range(3)]
    fd, partial = first.layout.temp_file()
    os.write(fd, b"half a download")
    os.close(fd)
    stray = first.layout.blobs / "sha256" / "ab" / "not-a-digest"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"junk")

    second = await new_storage()
    assert not partial.exists()
    assert temp_files(second) == []
    assert not stray.exists()
    assert second.stats().blobs == 3
    assert [second.size(BLOB, d) for d in kept] == [10, 11, 12]
    assert await second.read_small(BLOB, kept[2]) == bytes([2]) * 12


async def test_start_evicts_oldest_first_when_over_the_limit(new_storage: NewStorage) -> None:
    first = await new_storage()
    a, b, c = [await add(first, name * 10) for name in (b"a", b"b", b"c")]
    # Last access times, oldest first: b, c, a (not the commit order).
    for digest, when in ((b, 1_000_000), (c, 2_000_000), (a, 3_000_000)):
        os.utime(first.layout.content(BLOB, digest), (when, when))
    second = await new_storage(max_size=20)
    assert (cached(second, a), cached(second, b), cached(second, c)) == (True, False, True)
    assert second.stats().evictions == 1
    assert disk_usage(second) == 20


async def test_least_recently_read_is_evicted_first(new_storage: NewStorage) -> None:
    storage = await new_storage(max_size=30)
    a, b, c = [await add(storage, name * 10) for name in (b"a", b"b", b"c")]
    assert await read_all(storage, a) is not None  # a is now the most recently used
    d = await add(storage, b"d" * 10)
    assert (cached(storage, a), cached(storage, b), cached(storage, c), cached(storage, d)) == (True, False, True, True)
    e = await add(storage, b"e" * 10)
    assert not cached(storage, c) and cached(storage, e)
    assert await read_all(storage, b) is None
    assert disk_usage(storage) <= 30


async def test_size_lookup_counts_as_use(new_storage: NewStorage) -> None:
    storage = await new_storage(max_size=20)
    a, b = await add(storage, b"a" * 10), await add(storage, b"b" * 10)
    assert storage.size(BLOB, a) == 10
    await add(storage, b"c" * 10)
    assert cached(storage, a) and not cached(storage, b)


async def test_one_large_commit_evicts_several(new_storage: NewStorage) -> None:
    storage = await new_storage(max_size=100)
    small = [await add(storage, bytes([i]) * 30) for i in range(3)]
    big = await add(storage, b"B" * 80)
    assert [cached(storage, d) for d in small] == [False, False, False]
    assert cached(storage, big) and storage.stats().used == 80


async def test_open_entry_is_never_evicted_and_reads_in_full(new_storage: NewStorage) -> None:
    data = bytes(range(256)) * 40
    storage = await new_storage(max_size=len(data) + 20)
    leased = await add(storage, data)
    other = await add(storage, b"o" * 10)
    async with storage.open(BLOB, leased) as content:
        assert content is not None
        head = b"".join([c async for c in content.span(0, 100).pieces()])
        # Pushes the cache over its limit twice while the oldest entry is being read.
        newer = await add(storage, b"n" * 15)
        newest = await add(storage, b"m" * 15)
        assert cached(storage, leased)
        assert not cached(storage, other) and not cached(storage, newer)
        rest = b"".join([c async for c in content.span(100, content.size).pieces()])
    assert head + rest == data
    assert cached(storage, newest)
    assert await read_all(storage, leased) == data
    # Once released, it is evictable again.
    await add(storage, b"z" * (len(data) + 10))
    assert not cached(storage, leased)


async def test_concurrent_leases_on_one_entry(new_storage: NewStorage) -> None:
    storage = await new_storage(max_size=10)
    digest = await add(storage, b"a" * 10)
    async with storage.open(BLOB, digest) as first, storage.open(BLOB, digest) as second:
        assert first is not None and second is not None
        async with storage.open(BLOB, digest):
            pass
        with pytest.raises(StorageFull):  # no room beside the entry still leased twice
            await add(storage, b"b" * 5)
        assert cached(storage, digest)
        assert [c async for c in first.span(0, 10).pieces()] == [c async for c in second.span(0, 10).pieces()] == [b"a" * 10]


# --- repository links and tags ----------------------------------------------------------


async def test_blob_links_are_per_repository_and_registry_and_record_the_access(new_storage: NewStorage) -> None:
    storage = await new_storage()
    digest = digest_of(b"blob")
    assert await storage.blob_access(QUAY, digest) is None
    await storage.link_blob(QUAY, digest, "")
    assert await storage.blob_access(QUAY, digest) == ""
    await storage.link_blob(QUAY, digest, "cred:7")
    assert await storage.blob_access(QUAY, digest) == "cred:7"
    assert await storage.blob_access(GHCR, digest) is None
    assert await storage.blob_access(Target("quay.io", "org/other"), digest) is None
    assert await (await new_storage()).blob_access(QUAY, digest) == "cred:7"


async def test_manifest_links_keep_the_media_type_and_access(new_storage: NewStorage) -> None:
    storage = await new_storage()
    digest = digest_of(b"manifest")
    link = ManifestLink("application/vnd.oci.image.index.v1+json", "cred:3")
    assert await storage.manifest_link(QUAY, digest) is None
    await storage.link_manifest(QUAY, digest, link)
    assert await storage.manifest_link(QUAY, digest) == link
    assert await storage.manifest_link(GHCR, digest) is None


async def test_tag_records_round_trip_and_survive_a_new_instance(new_storage: NewStorage) -> None:
    record = TagRecord(f"sha256:{'a' * 64}", "application/vnd.oci.image.manifest.v1+json", 1234, 1_700_000_000.5)
    await (await new_storage()).set_tag(QUAY, "1.2", record)
    reopened = await new_storage()
    assert await reopened.tag(QUAY, "1.2") == record
    assert await reopened.tag(QUAY, "1.3") is None
    assert await reopened.tag(GHCR, "1.2") is None
    assert record.age(now=1_700_000_010.5) == 10.0


async def test_overwriting_a_tag_replaces_it_whole(new_storage: NewStorage) -> None:
    storage = await new_storage()
    old = TagRecord(f"sha256:{'a' * 64}", "application/vnd.docker.distribution.manifest.list.v2+json" * 3, 99999, 1.0)
    new = TagRecord(f"sha256:{'b' * 64}", "x", 1, 2.0)
    await storage.set_tag(QUAY, "latest", old)
    await storage.set_tag(QUAY, "latest", new)
    assert await storage.tag(QUAY, "latest") == new
    assert await (await new_storage()).tag(QUAY, "latest") == new
    assert temp_files(storage) == []


async def test_a_failed_tag_write_leaves_the_old_record(new_storage: NewStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = await new_storage()
    old = TagRecord(f"sha256:{'a' * 64}", "application/vnd.oci.image.manifest.v1+json", 10, 1.0)
    await storage.set_tag(QUAY, "latest", old)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        await storage.set_tag(QUAY, "latest", TagRecord(f"sha256:{'b' * 64}", "y", 20, 2.0))
    monkeypatch.undo()
    assert await storage.tag(QUAY, "latest") == old
    assert await (await new_storage()).tag(QUAY, "latest") == old
    assert temp_files(storage) == []


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"digest": "x"}', b"[1, 2]", b'"x"'])
async def test_unreadable_tag_record_counts_as_unknown(new_storage: NewStorage, content: bytes) -> None:
    storage = await new_storage()
    path = storage.layout.tag(QUAY, "latest")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert await storage.tag(QUAY, "latest") is None


async def test_a_manifest_read_once_is_served_from_memory_until_it_leaves_the_cache(new_storage: NewStorage) -> None:
    storage = await new_storage(max_size=40)
    manifest = b'{"schemaVersion":2,"x":1}'
    digest = digest_of(manifest)
    await storage.put(MANIFEST, digest, manifest)
    assert await storage.read_small(MANIFEST, digest) == manifest
    storage.layout.content(MANIFEST, digest).unlink()
    assert await storage.read_small(MANIFEST, digest) == manifest  # no file read for a warm manifest
    await add(storage, b"b" * 40)  # evicts the manifest
    assert storage.size(MANIFEST, digest) is None
    assert await storage.read_small(MANIFEST, digest) is None
