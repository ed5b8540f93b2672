"""The on-disk cache: content by digest with LRU eviction, and per-repository links and tags."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from proxy.reference import Digest, Target
from proxy.storage.content import ContentStore
from proxy.storage.index import RepositoryIndex, TagRecord
from proxy.storage.layout import Layout

QUAY = Target("quay.io", "org/app")
GHCR = Target("ghcr.io", "org/app")


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def new_store(tmp_path: Path, max_size: int = 1 << 30) -> ContentStore:
    store = ContentStore(Layout(tmp_path), max_size=max_size)
    store.load()
    return store


def add(store: ContentStore, data: bytes) -> Digest:
    """Commit content the way a finished download does: temp file, then rename."""
    fd, temp = store.layout.temp_file()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    digest = digest_of(data)
    store.commit(temp, digest, len(data))
    return digest


def cached(store: ContentStore, digest: Digest) -> bool:
    return store.layout.blob(digest).exists()


def disk_usage(store: ContentStore) -> int:
    roots = (store.layout.blobs, store.layout.manifests)
    return sum(p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file())


def test_commit_then_open_and_size(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    data = b"layer bytes" * 100
    digest = add(store, data)
    assert store.size(digest) == len(data)
    with store.open(digest) as opened:
        assert opened is not None
        f, size = opened
        assert (f.read(), size) == (data, len(data))
    assert store.read_small(digest, "blob") == data
    assert list(store.layout.tmp.iterdir()) == []


def test_unknown_content_is_absent(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    missing = digest_of(b"never stored")
    assert store.size(missing) is None
    assert store.read_small(missing, "blob") is None
    with store.open(missing) as opened:
        assert opened is None


def test_content_deleted_behind_our_back_is_forgotten(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    digest = add(store, b"x" * 10)
    store.layout.blob(digest).unlink()
    assert store.read_small(digest, "blob") is None
    assert store.size(digest) is None


def test_put_small_content_is_idempotent(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    manifest = b'{"schemaVersion":2}'
    digest = digest_of(manifest)
    store.put(digest, manifest)
    store.put(digest, manifest)
    assert store.read_small(digest) == manifest
    assert store.size(digest) is None  # a manifest is not a blob of the same digest
    assert store.counts["manifest"] == 1 and store.counts["blob"] == 0
    assert len(store) == 1
    assert store.used == len(manifest) == disk_usage(store)
    assert list(store.layout.tmp.iterdir()) == []


def test_load_removes_leftover_temp_files_and_indexes_existing_content(tmp_path: Path) -> None:
    first = new_store(tmp_path)
    kept = [add(first, bytes([i]) * (10 + i)) for i in range(3)]
    fd, partial = first.layout.temp_file()
    os.write(fd, b"half a download")
    os.close(fd)
    stray = first.layout.blobs / "sha256" / "ab" / "not-a-digest"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"junk")

    second = new_store(tmp_path)
    assert not partial.exists()
    assert list(second.layout.tmp.iterdir()) == []
    assert not stray.exists()
    assert len(second) == 3
    assert [second.size(d) for d in kept] == [10, 11, 12]
    assert second.read_small(kept[2], "blob") == bytes([2]) * 12


def test_load_evicts_oldest_first_when_over_the_limit(tmp_path: Path) -> None:
    first = new_store(tmp_path)
    a, b, c = (add(first, name * 10) for name in (b"a", b"b", b"c"))
    # Last access times, oldest first: b, c, a (not the commit order).
    for digest, when in ((b, 1_000_000), (c, 2_000_000), (a, 3_000_000)):
        os.utime(first.layout.blob(digest), (when, when))
    second = new_store(tmp_path, max_size=20)
    assert (cached(second, a), cached(second, b), cached(second, c)) == (True, False, True)
    assert second.evictions == 1
    assert disk_usage(second) == 20


def test_least_recently_read_is_evicted_first(tmp_path: Path) -> None:
    store = new_store(tmp_path, max_size=30)
    a, b, c = (add(store, name * 10) for name in (b"a", b"b", b"c"))
    assert store.read_small(a, "blob") is not None  # a is now the most recently used
    d = add(store, b"d" * 10)
    assert (cached(store, a), cached(store, b), cached(store, c), cached(store, d)) == (True, False, True, True)
    e = add(store, b"e" * 10)
    assert not cached(store, c) and cached(store, e)
    assert store.read_small(b, "blob") is None
    assert disk_usage(store) <= 30


def test_size_lookup_counts_as_use(tmp_path: Path) -> None:
    store = new_store(tmp_path, max_size=20)
    a, b = add(store, b"a" * 10), add(store, b"b" * 10)
    assert store.size(a) == 10
    add(store, b"c" * 10)
    assert cached(store, a) and not cached(store, b)


def test_one_large_commit_evicts_several(tmp_path: Path) -> None:
    store = new_store(tmp_path, max_size=100)
    small = [add(store, bytes([i]) * 30) for i in range(3)]
    big = add(store, b"B" * 80)
    assert [cached(store, d) for d in small] == [False, False, False]
    assert cached(store, big) and store.used == 80


def test_open_entry_is_never_evicted_and_reads_in_full(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    store = new_store(tmp_path, max_size=len(data) + 20)
    leased = add(store, data)
    other = add(store, b"o" * 10)
    with store.open(leased) as opened:
        assert opened is not None
        f, size = opened
        head = f.read(100)
        # Pushes the cache over its limit twice while the oldest entry is being read.
        newer = add(store, b"n" * 15)
        newest = add(store, b"m" * 15)
        assert cached(store, leased)
        assert not cached(store, other) and not cached(store, newer)
        rest = f.read()
    assert head + rest == data and size == len(data)
    assert cached(store, newest)
    assert store.read_small(leased, "blob") == data
    # Once released, it is evictable again.
    add(store, b"z" * (len(data) + 10))
    assert not cached(store, leased)


def test_concurrent_leases_on_one_entry(tmp_path: Path) -> None:
    store = new_store(tmp_path, max_size=10)
    digest = add(store, b"a" * 10)
    with store.open(digest) as first, store.open(digest) as second:
        assert first is not None and second is not None
        with store.open(digest):
            pass
        add(store, b"b" * 5)
        assert cached(store, digest)
        assert first[0].read() == second[0].read() == b"a" * 10


# --- RepositoryIndex ------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    layout.create()
    return layout


def test_blob_links_are_per_repository_and_registry_and_record_the_access(layout: Layout) -> None:
    index = RepositoryIndex(layout)
    digest = digest_of(b"blob")
    assert index.blob_access(QUAY, digest) is None
    index.link_blob(QUAY, digest, "")
    assert index.blob_access(QUAY, digest) == ""
    index.link_blob(QUAY, digest, "cred:7")
    assert index.blob_access(QUAY, digest) == "cred:7"
    assert index.blob_access(GHCR, digest) is None
    assert index.blob_access(Target("quay.io", "org/other"), digest) is None
    assert RepositoryIndex(layout).blob_access(QUAY, digest) == "cred:7"


def test_manifest_links_keep_the_media_type_and_access(layout: Layout) -> None:
    index = RepositoryIndex(layout)
    digest = digest_of(b"manifest")
    media_type = "application/vnd.oci.image.index.v1+json"
    assert index.manifest(QUAY, digest) is None
    index.link_manifest(QUAY, digest, media_type, "cred:3")
    link = index.manifest(QUAY, digest)
    assert link is not None and (link.media_type, link.access) == (media_type, "cred:3")
    assert index.manifest(GHCR, digest) is None


def test_tag_records_round_trip_and_survive_a_new_instance(layout: Layout, tmp_path: Path) -> None:
    record = TagRecord(f"sha256:{'a' * 64}", "application/vnd.oci.image.manifest.v1+json", 1234, 1_700_000_000.5)
    RepositoryIndex(layout).set_tag(QUAY, "1.2", record)
    reopened = RepositoryIndex(Layout(tmp_path))
    assert reopened.tag(QUAY, "1.2") == record
    assert reopened.tag(QUAY, "1.3") is None
    assert reopened.tag(GHCR, "1.2") is None
    assert record.age(now=1_700_000_010.5) == 10.0


def test_overwriting_a_tag_replaces_it_whole(layout: Layout) -> None:
    index = RepositoryIndex(layout)
    old = TagRecord(f"sha256:{'a' * 64}", "application/vnd.docker.distribution.manifest.list.v2+json" * 3, 99999, 1.0)
    new = TagRecord(f"sha256:{'b' * 64}", "x", 1, 2.0)
    index.set_tag(QUAY, "latest", old)
    index.set_tag(QUAY, "latest", new)
    assert index.tag(QUAY, "latest") == new
    assert list(layout.tmp.iterdir()) == []


def test_a_failed_tag_write_leaves_the_old_record(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    index = RepositoryIndex(layout)
    old = TagRecord(f"sha256:{'a' * 64}", "application/vnd.oci.image.manifest.v1+json", 10, 1.0)
    index.set_tag(QUAY, "latest", old)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        index.set_tag(QUAY, "latest", TagRecord(f"sha256:{'b' * 64}", "y", 20, 2.0))
    monkeypatch.undo()
    assert index.tag(QUAY, "latest") == old
    assert list(layout.tmp.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"digest": "x"}', b"[1, 2]", b'"x"'])
def test_unreadable_tag_record_counts_as_unknown(layout: Layout, content: bytes) -> None:
    path = layout.tag(QUAY, "latest")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert RepositoryIndex(layout).tag(QUAY, "latest") is None
