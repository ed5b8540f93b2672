"""Blob bodies onto the wire: cache files by ``sendfile``, bytes by writes.

A ``FileRange`` goes from the page cache to the socket without passing
through Python, so a client streaming a blob costs neither a copy per byte
nor a buffer of its own. The event loop sends it; the range is first asked
into memory from a worker thread (``posix_fadvise``), so the loop does not
wait on the disk to read it.

Where ``sendfile`` cannot serve (a TLS connection, an event loop without
it), the range is read in a worker thread a piece at a time and written.
"""

from __future__ import annotations

import asyncio
from typing import IO, cast

from aiohttp import web

from proxy.api.state import SENT_BY_SENDFILE
from proxy.pullthrough.blobs import Piece
from proxy.storage.base import FileRange

__all__ = ["BodySender"]

# One sendfile call at a time moves at most this much; the next one is read ahead meanwhile.
SEGMENT = 8 * 1024 * 1024


class _Descriptor:
    """What ``loop.sendfile`` needs of a file: its descriptor. It never reads the file position."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


class BodySender:
    def __init__(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        self._request = request
        self._response = response
        transport = request.transport
        self._native = transport is not None and transport.get_extra_info("sslcontext") is None

    async def send(self, piece: Piece) -> int:
        """Send one piece of the body; returns its size."""
        if isinstance(piece, bytes | memoryview):
            await self._response.write(piece)
            return len(piece)
        if isinstance(piece, FileRange) and self._native:
            try:
                await self._sendfile(piece)
                return piece.count
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                # An event loop without sendfile (uvloop) or a transport that cannot use it refuses
                # before sending anything: this piece and the rest are read and written instead.
                self._native = False
        async for chunk in piece.pieces():
            await self._response.write(chunk)
        return piece.count

    async def _sendfile(self, piece: FileRange) -> None:
        loop = asyncio.get_running_loop()
        position, end = piece.offset, piece.offset + piece.count
        while position < end:
            count = min(SEGMENT, end - position)
            if not piece.resident:
                # This segment and the next: the next is on its way while this one goes out.
                await piece.file.advise(position, 2 * SEGMENT)
            transport = self._request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away")
            with piece.file.borrowed() as fd:
                sent = await loop.sendfile(transport, cast(IO[bytes], _Descriptor(fd)), position, count, fallback=False)
            self._request[SENT_BY_SENDFILE] = self._request.get(SENT_BY_SENDFILE, 0) + sent
            if sent < count:
                raise OSError(f"the file ended at byte {position + sent} of {end}")
            position += count
