"""In-memory stand-ins for what the pull-through engine talks to: a counting upstream, a body the test feeds, a clock.

``FakeUpstream`` implements the ``Upstream`` protocol and counts every call by
(method, path, target), so a test states exactly what a pull costs upstream,
zero on a warm path. Nothing here sleeps: a download the test must pause is
``hold``-ed and fed chunk by chunk, and a ``Tally`` is a count a test can wait on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.download import Piece
from proxy.reference import Digest, Target
from proxy.storage.base import FileRange, TagRecord
from proxy.storage.filesystem import FilesystemStorage, _PartialBlob
from proxy.upstream.endpoints import EndpointKind
from yarl import URL

__all__ = ["OCI_INDEX", "OCI_MANIFEST", "WAIT", "Clock", "FakeUpstream", "HeldBody", "ObservedStorage", "Tally", "blob_call",
           "digest_of", "files_under", "flipped", "joined", "manifest_call", "open_storage", "piece_bytes"]

# A bound on waits that should end at once; reaching it means the test failed, not that it was slow.
WAIT = 5.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

Call = tuple[str, str, Target]


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def piece_bytes(piece: Piece) -> bytes:
    """What a client would receive for one piece of a body: a file range read out, or the bytes."""
    if isinstance(piece, FileRange):
        return b"".join([chunk async for chunk in piece.pieces()])
    return bytes(piece)


async def joined(pieces: AsyncIterator[Piece]) -> bytes:
    return b"".join([await piece_bytes(piece) async for piece in pieces])


def flipped(data: bytes) -> bytes:
    """Other bytes of the same length."""
    return bytes(b ^ 0xFF for b in data)


class Tally:
    """A count that one waiter at a time can wait to reach."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Event()

    def add(self, n: int = 1) -> None:
        self.value += n
        self._changed.set()

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.value < n:
                self._changed.clear()
                await self._changed.wait()


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HeldBody:
    """A response body the engine receives only as fast as the test sends it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._sent = 0
        # How often the engine asked for the next chunk: once more than was
        # sent means it has stored everything sent so far.
        self.asked = Tally()
        self.stopped = asyncio.Event()

    async def send(self, chunk: bytes) -> None:
        """Hand over one chunk and return once the engine has stored it and waits for more."""
        self._queue.put_nowait(chunk)
        self._sent += 1
        await self.asked.reach(self._sent + 1)

    async def send_all(self, data: bytes, pieces: int) -> None:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            await self.send(data[start:start + step])

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                self.asked.add()
                item = await self._queue.get()
                if item is None:
                    return
                yield item
        finally:
            self.stopped.set()


class _Content:
    def __init__(self, data: bytes, held: HeldBody | None) -> None:
        self._data = data
        self._held = held

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        if self._held is not None:
            async for chunk in self._held.chunks():
                yield chunk
            return
        for start in range(0, len(self._data), n):
            yield self._data[start:start + n]


@dataclass
class FakeAnswer:
    """The ``Answer`` protocol: what the engine reads of an upstream response."""

    content_length: int | None
    headers: CIMultiDictProxy[str]
    content: _Content
    links: MultiDictProxy[MultiDictProxy[str | URL]] = field(
        default_factory=lambda: MultiDictProxy(MultiDict[MultiDictProxy[str | URL]]()))


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


class FakeUpstream:
    """The ``Upstream`` protocol in memory: blobs and manifests per repository, every call counted.

    ``fail`` makes every call raise; ``refuse`` makes one repository's calls
    raise; ``corrupt`` serves other bytes of the same length for a digest;
    ``hold`` makes the next GET of a blob stream only what the test sends;
    ``gate`` keeps every GET from being answered until the test opens it.
    ``referrers`` lists, per repository and subject, the descriptors of the
    referrers API, filtered by ``artifactType`` unless ``filters`` is off, or
    the bytes to answer instead.
    """

    def __init__(self) -> None:
        self.blobs: dict[Target, dict[Digest, bytes]] = {}
        self.manifests: dict[Target, dict[str, tuple[bytes, str]]] = {}
        self.calls: Counter[Call] = Counter()
        self.access: dict[str, str] = {}
        self.failure: ErrorCode | None = None
        self.refused: dict[Target, ErrorCode] = {}
        self.corrupt: set[Digest] = set()
        self._held: dict[Digest, list[HeldBody]] = {}
        # When set, every GET waits here, before its answer, until the test opens the gate.
        self.gate: asyncio.Event | None = None
        self.gets_waiting = Tally()
        # When set, every request waits here forever: an upstream that accepts and never answers.
        self.silent = False
        self.unresponsive_reports: list[str] = []
        self.variants: dict[tuple[Target, str], dict[str, bytes]] = {}
        self.referrers: dict[tuple[Target, str], list[dict[str, object]] | bytes] = {}
        self.filters = True

    # Setting up

    def add_blob(self, data: bytes, *targets: Target) -> Digest:
        digest = digest_of(data)
        for target in targets:
            self.blobs.setdefault(target, {})[digest] = data
        return digest

    def add_manifest(self, target: Target, tag: str | None, body: bytes, media_type: str = OCI_MANIFEST) -> Digest:
        digest = digest_of(body)
        stored = self.manifests.setdefault(target, {})
        stored[str(digest)] = (body, media_type)
        if tag is not None:
            stored[tag] = (body, media_type)
            # A tag with several types answers each Accept set with the first type it offers, as registries do.
            self.variants.setdefault((target, tag), {})[media_type] = body
        return digest

    def hold(self, digest: Digest) -> HeldBody:
        held = HeldBody()
        self._held.setdefault(digest, []).append(held)
        return held

    def fail(self, code: ErrorCode | None) -> None:
        self.failure = code

    def refuse(self, target: Target, code: ErrorCode = ErrorCode.DENIED) -> None:
        self.refused[target] = code

    # Reading the record

    def count(self, method: str | None = None, *, target: Target | None = None) -> int:
        return sum(n for (m, _, t), n in self.calls.items() if method in (None, m) and target in (None, t))

    def reset(self) -> None:
        self.calls.clear()

    # The Upstream protocol

    def access_key(self, environment: str, registry: str) -> str:
        return self.access.get(f"{environment}/{registry}", self.access.get(registry, ""))

    def unresponsive(self, registry: str, message: str) -> None:
        self.unresponsive_reports.append(registry)

    @asynccontextmanager
    async def open(self, target: Target, method: str, path: str, *, env: str, kind: EndpointKind,
                   headers: Mapping[str, str] | None = None,
                   params: Mapping[str, str] | None = None) -> AsyncIterator[FakeAnswer]:
        self.calls[(method, path, target)] += 1
        if self.silent:
            await asyncio.Event().wait()
        if method == "GET" and self.gate is not None:
            self.gets_waiting.add()
            await self.gate.wait()
        if self.failure is not None:
            raise RegistryError(self.failure, f"fake upstream fails with {self.failure.wire}")
        if target in self.refused:
            raise RegistryError(self.refused[target], f"fake upstream refuses {target}")
        section, _, reference = path.partition("/")
        if section == "blobs":
            yield self._blob(target, method, reference)
        elif section == "manifests":
            yield self._manifest(target, method, reference, (headers or {}).get("Accept", ""))
        elif section == "referrers":
            yield self._referrers(target, reference, (params or {}).get("artifactType"))
        else:
            raise AssertionError(f"unexpected upstream path {path}")

    def _blob(self, target: Target, method: str, reference: str) -> FakeAnswer:
        digest = next((d for d in self.blobs.get(target, {}) if str(d) == reference), None)
        if digest is None:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, f"fake upstream has no blob {reference} in {target}")
        data = self.blobs[target][digest]
        if digest in self.corrupt:
            data = flipped(data)
        held = None
        if method == "GET" and self._held.get(digest):
            held = self._held[digest].pop(0)
        body = b"" if method == "HEAD" else data
        return FakeAnswer(len(data), _headers(Docker_Content_Digest=str(digest)), _Content(body, held))

    def _manifest(self, target: Target, method: str, reference: str, accept: str) -> FakeAnswer:
        found = self.manifests.get(target, {}).get(reference)
        variants = self.variants.get((target, reference), {})
        offered = [media_type for media_type in variants if media_type in accept]
        if len(variants) > 1 and offered:
            found = (variants[offered[0]], offered[0])
        if found is None:
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"fake upstream has no manifest {reference} in {target}")
        body, media_type = found
        digest = digest_of(body)
        if digest in self.corrupt:
            body = flipped(body)
        headers = _headers(Docker_Content_Digest=str(digest), Content_Type=media_type)
        return FakeAnswer(len(body), headers, _Content(b"" if method == "HEAD" else body, None))


    def _referrers(self, target: Target, subject: str, artifact_type: str | None) -> FakeAnswer:
        listed = self.referrers.get((target, subject))
        if listed is None:
            raise RegistryError(ErrorCode.NAME_UNKNOWN, f"fake upstream has no referrers of {subject} in {target}")
        headers = {"Content_Type": OCI_INDEX}
        if isinstance(listed, bytes):
            return FakeAnswer(len(listed), _headers(**headers), _Content(listed, None))
        if artifact_type is not None and self.filters:
            listed = [d for d in listed if d.get("artifactType") == artifact_type]
            headers["OCI_Filters_Applied"] = "artifactType"
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}).encode()
        return FakeAnswer(len(body), _headers(**headers), _Content(body, None))


class ObservedStorage(FilesystemStorage):
    """The real filesystem cache, counting for waiting tests the tag lookups answered and downloads discarded.

    A count goes up just before its caller resumes, in the same step, so a
    test woken by it runs only once that caller has moved on to its next await.
    """

    def __init__(self, data_dir: Path, *, max_size: int) -> None:
        super().__init__(data_dir, max_size=max_size)
        self.tag_reads = Tally()
        self.discards = Tally()

    async def begin_blob(self, digest: Digest, size: int | None = None) -> _PartialBlob:
        partial = await super().begin_blob(digest, size)
        discard = partial.discard

        async def counted_discard() -> None:
            await discard()
            self.discards.add()

        partial.discard = counted_discard  # type: ignore[method-assign]
        return partial

    async def tag(self, target: Target, tag: str) -> TagRecord | None:
        record = await super().tag(target, tag)
        self.tag_reads.add()
        return record


@asynccontextmanager
async def open_storage(data_dir: Path, *, max_size: int = 1 << 30) -> AsyncIterator[ObservedStorage]:
    storage = ObservedStorage(data_dir, max_size=max_size)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


def blob_call(method: str, target: Target, digest: Digest) -> Call:
    return (method, f"blobs/{digest}", target)


def manifest_call(method: str, target: Target, reference: str | Digest) -> Call:
    return (method, f"manifests/{reference}", target)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
