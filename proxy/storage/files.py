"""File I/O off the event loop: a worker pool, descriptors used from it, and writes readers never see half-done.

Cache files are read and written in the storage's own threads. A released
descriptor closes only once no read is still running on it in a thread: a
reader cancelled mid-read (a client that disconnects) must never have its
descriptor closed, and the number reused by another file, under a thread
that is still reading it. The same holds while a ``FileRange`` of it is
being sent by ``sendfile`` on the event loop: that borrows the descriptor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

__all__ = ["PIECE", "FileRange", "IoPool", "SharedFd", "atomic_write", "pwrite_all", "start_writeback", "write_all"]

# What one copy through memory moves at most: enough to keep a socket busy,
# small enough that a slow client holds little while its buffer drains.
PIECE = 256 * 1024

P = ParamSpec("P")
T = TypeVar("T")


class IoPool:
    """The threads that do the cache's file I/O; closing waits for the work they have."""

    def __init__(self, workers: int = 8) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache-io")

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: work(*args, **kwargs))

    def submit(self, work: Callable[[], T]) -> concurrent.futures.Future[T]:
        """For callers that must learn when the thread itself is done, not just their await (see SharedFd)."""
        return self._executor.submit(work)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class SharedFd:
    """A descriptor used from worker threads; ``release`` closes it once no thread still uses it."""

    def __init__(self, fd: int, pool: IoPool) -> None:
        self.fd = fd
        self._pool = pool
        self._busy = 0
        self._released = False
        self._closed = False

    def release(self) -> None:
        self._released = True
        self._close_when_idle()

    async def pread(self, size: int, position: int) -> bytes:
        return await self.use(lambda fd: os.pread(fd, size, position))

    async def use(self, work: Callable[[int], T]) -> T:
        if self._released:
            raise OSError("the descriptor was released")
        fd, loop = self.fd, asyncio.get_running_loop()
        self._busy += 1
        future = self._pool.submit(lambda: work(fd))
        # Counted down when the thread is done, not when the awaiting task
        # is: a cancelled await leaves the thread running.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._idle))
        return await asyncio.wrap_future(future)

    @contextmanager
    def borrowed(self) -> Iterator[int]:
        """The descriptor itself, kept open while the block runs on the event loop (``sendfile``)."""
        if self._released:
            raise OSError("the descriptor was released")
        self._busy += 1
        try:
            yield self.fd
        finally:
            self._idle()

    async def advise(self, offset: int, count: int) -> None:
        """Start reading a range into the page cache, so sending it from the event loop does not wait on the disk."""
        await self.use(lambda fd: os.posix_fadvise(fd, offset, count, os.POSIX_FADV_WILLNEED))

    def _idle(self) -> None:
        self._busy -= 1
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self._released and self._busy == 0 and not self._closed:
            self._closed = True
            os.close(self.fd)


@dataclass(frozen=True)
class FileRange:
    """``count`` bytes of an open cache file from ``offset``: sent by ``sendfile`` where the connection allows it."""

    file: SharedFd
    offset: int
    count: int
    # Written moments ago (a download in progress): in memory, nothing to read ahead.
    resident: bool = False

    async def pieces(self) -> AsyncIterator[bytes]:
        """The bytes, read in a worker thread a ``PIECE`` at a time: for connections ``sendfile`` cannot serve."""
        position, end = self.offset, self.offset + self.count
        while position < end:
            chunk = await self.file.pread(min(PIECE, end - position), position)
            if not chunk:
                raise OSError(f"the file ended at byte {position} of {end}")
            position += len(chunk)
            yield chunk


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write at ``offset`` without moving the file position, which ``sendfile`` of the same descriptor sets."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write a small file so readers see either the old or the new content, even after a power loss. Blocking.

    The data is synced before the rename, and the rename after it: a crash
    leaves the old file or the whole new one, never an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="small-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
        _sync_dir(path.parent)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    # ctypes loads with the first download, not with every process.
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    # The C library the interpreter itself runs on.
    call = ctypes.CDLL(None, use_errno=True).sync_file_range
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, count: int) -> None:
    """Have the kernel start writing a range to disk, without waiting for it. Blocking only briefly.

    A download's bytes then reach the disk while it runs, so the fsync that
    commits it (and that the last byte waits for) finds little left to do;
    PostgreSQL spreads its checkpoint writes the same way. Python has no
    binding for ``sync_file_range``; where there is none, the fsync does it all.
    """
    sync_file_range = _sync_file_range()
    if sync_file_range is not None:
        sync_file_range(fd, offset, count, _SYNC_FILE_RANGE_WRITE)
