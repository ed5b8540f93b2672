"""The shared index's map and its writes: reloads that overlap, access times flushed in one order everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from proxy.storage.base import ContentKind
from proxy.storage.shared_index import CHANNEL, SharedIndex

from .s3_fixtures import S3Env, digest_of, eventually


async def test_a_reload_asked_for_while_one_runs_runs_again_after_it(s3env: S3Env,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    storage = await s3env.replica()
    index = storage._index
    read, gate = asyncio.Event(), asyncio.Event()
    reload = index.reload

    async def slow_reload() -> None:
        await reload()
        if not read.is_set():
            read.set()  # this one has read the table: what changes from now on it missed
            await gate.wait()
    monkeypatch.setattr(index, "reload", slow_reload)
    index.on_notify(CHANNEL, "")
    await asyncio.wait_for(read.wait(), timeout=5)
    unheard = digest_of(b"added while the listener was deaf")
    await s3env.sql("INSERT INTO cache_content VALUES ('blob', %s, 7, 0, 0)", str(unheard))
    index.on_notify(CHANNEL, "")  # reconnected again: anything may have changed
    gate.set()
    await eventually(lambda: index.holds(ContentKind.BLOB, unheard), within=2,
                     what="a second reload to find the row the first one missed")


class _Recorder:
    """A pool whose transactions record the parameters of each statement."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    async def transaction(self, work: Callable[[Any], Any]) -> Any:
        return work(self)

    def execute(self, sql: str, params: Any = ()) -> None:
        self.params.append(params)


async def test_access_times_are_written_in_key_order_so_two_flushes_never_deadlock() -> None:
    pool = _Recorder()
    index = SharedIndex(pool)  # type: ignore[arg-type]
    keys = [(ContentKind.MANIFEST, digest_of(b"b")), (ContentKind.BLOB, digest_of(b"c")),
            (ContentKind.MANIFEST, digest_of(b"a")), (ContentKind.BLOB, digest_of(b"a"))]
    for key in keys:
        index._set(key, 1)
    for kind, digest in keys:
        index.size(kind, digest)
    await index.flush_access()
    kinds, digests, _ = pool.params[0]
    assert list(zip(kinds, digests, strict=True)) == sorted((kind.value, str(digest)) for kind, digest in keys)
