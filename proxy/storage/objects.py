"""Content in an S3-compatible bucket: the only module that talks to object storage, and imports boto3.

boto3 is imported on first use, inside the calls, so a process serving from
the filesystem never loads it. Its client blocks, so every call runs in this
module's own threads; bodies are read differently: a presigned GET through
aiohttp, streamed a piece at a time (``ObjectRange``), never held whole.

Every failed call raises ``ObjectStoreError`` (an ``OSError``, so callers
that keep content best-effort treat it as they treat a disk error) and is
counted in ``errors``. Messages name the bucket and key, never a presigned
URL: its query string is a credential for as long as it lives.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp

from proxy.reference import Digest
from proxy.storage.base import ContentKind, StorageUnavailable

__all__ = ["READ", "ObjectMissing", "ObjectRange", "ObjectStore", "ObjectStoreError", "Sink", "Upload", "describe"]

T = TypeVar("T")

# What one read of an object's body asks for.
READ = 1024 * 1024
# Keys one DeleteObjects request takes at most (the S3 API's limit).
_DELETE_BATCH = 1000
# A URL's query string, where a presigned URL carries its signature and session token.
_QUERY = re.compile(r"(\w[\w+.-]*://[^\s?'\"]*)\?[^\s'\"]*")


class ObjectStoreError(StorageUnavailable):
    """A call to object storage failed: unreachable, refused, or the object is not there."""


class ObjectMissing(ObjectStoreError):
    """The bucket answered that the object is not there (gone behind the index's back); not a failure of it."""


class Sink(Protocol):
    """Hears what an ``ObjectRange`` reads: every piece, then ``finish`` once all arrived, or ``abandon``."""

    async def feed(self, chunk: bytes) -> None: ...

    async def finish(self) -> None: ...

    def abandon(self) -> None: ...


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str


class ObjectStore:
    def __init__(self, *, bucket: str, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._region = region
        self._endpoint_url = endpoint_url
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3")
        self._client: Any = None
        self._session: aiohttp.ClientSession | None = None
        self.errors = 0

    async def start(self) -> None:
        self._client = await asyncio.get_running_loop().run_in_executor(self._threads, self._new_client)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=30), auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self._threads.shutdown, wait=True)

    def key(self, kind: ContentKind, digest: Digest) -> str:
        folder = "manifests" if kind is ContentKind.MANIFEST else "blobs"
        return f"{self.prefix}{folder}/{digest.algorithm}/{digest.hex}"

    async def put(self, key: str, data: bytes) -> None:
        await self._call("PUT", key, lambda c: c.put_object(Bucket=self.bucket, Key=key, Body=data))

    async def create_upload(self, key: str) -> str:
        answer = await self._call("starting an upload of", key,
                                  lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key))
        upload_id: str = answer["UploadId"]
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        answer = await self._call(f"uploading part {number} of", key, lambda c: c.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data))
        etag: str = answer["ETag"]
        return etag

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> None:
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, start=1)]
        await self._call("completing the upload of", key, lambda c: c.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._call("aborting the upload of", key,
                         lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id))

    async def uploads(self, under: str | None = None) -> list[Upload]:
        """Multipart uploads begun under the prefix (or ``under``, a key or the start of keys) and neither completed
        nor aborted."""
        prefix = self.prefix if under is None else under

        def work(client: Any) -> list[Upload]:
            found = []
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [Upload(item["Key"], item["UploadId"]) for item in page.get("Uploads", [])]
            return found
        return await self._call("listing the uploads under", prefix, work)

    async def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + _DELETE_BATCH]]
            answer = await self._call(f"deleting {len(batch)} objects from", "", functools.partial(self._delete, batch))
            if answer.get("Errors"):
                self.errors += 1
                first = answer["Errors"][0]
                raise ObjectStoreError(f"deleting s3://{self.bucket}/{first['Key']} failed: {first['Message']}")

    def _delete(self, batch: list[dict[str, str]], client: Any) -> Any:
        return client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    async def presign(self, key: str, expires: int) -> str:
        """A URL that GETs the object without credentials until it expires; never to be logged."""
        url: str = await self._call("presigning", key, lambda c: c.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires))
        return url

    def range(self, key: str, url: str, start: int, count: int, sink: Sink | None = None) -> ObjectRange:
        return ObjectRange(self, key, url, start, count, sink)

    async def probe(self, key: str, url: str) -> bool:
        """Whether the object is there, by a GET of its first byte; ``ObjectStoreError`` when the bucket cannot say."""
        try:
            async with self.session.get(url, headers={"Range": "bytes=0-0"}) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.failed("reading", key, exc) from None
        if response.status == 404:
            return False
        if response.status not in (200, 206):
            raise self.failed("reading", key, RuntimeError(f"status {response.status}"))
        return True

    async def read(self, key: str, size: int) -> bytes:
        """A whole small object."""
        url = await self.presign(key, 300)
        return b"".join([chunk async for chunk in self.range(key, url, 0, size).pieces()])

    def failed(self, what: str, key: str, exc: BaseException) -> ObjectStoreError:
        self.errors += 1
        return ObjectStoreError(f"{what} s3://{self.bucket}/{key} failed: {describe(exc)}")

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    async def _call(self, what: str, key: str, work: Callable[[Any], T]) -> T:
        assert self._client is not None, "start() first"
        client = self._client

        def run() -> T:
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                return work(client)
            except (BotoCoreError, ClientError) as exc:
                raise _Failed(exc) from None

        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, run)
        except _Failed as failed:
            raise self.failed(what, key, failed.cause) from None

    def _new_client(self) -> Any:
        import boto3
        from botocore.config import Config

        # MinIO and Ceph RGW behind a plain endpoint want the bucket in the path, not the host name.
        style = "path" if self._endpoint_url else "auto"
        # Attempts per call: the standard mode's 3, unless $AWS_MAX_ATTEMPTS or the AWS config says otherwise.
        config = Config(s3={"addressing_style": style}, retries={"mode": "standard"},
                        connect_timeout=5, read_timeout=60, max_pool_connections=16)
        return boto3.session.Session().client("s3", region_name=self._region, endpoint_url=self._endpoint_url,
                                              config=config)


def describe(exc: BaseException) -> str:
    """What went wrong, with no URL's query string: aiohttp names the presigned URL it was reading."""
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed answer, too many redirects
        text = " ".join(filter(None, [f"{type(exc).__name__}:", f"status {exc.status}" if exc.status else "",
                                      exc.message]))
    elif isinstance(exc, aiohttp.InvalidURL):
        text = f"{type(exc).__name__}: {exc.description or 'not a valid URL'}"
    else:
        text = str(exc) or type(exc).__name__
    return _QUERY.sub(r"\1?...", text)


class _Failed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class ObjectRange:
    """``count`` bytes of an object from ``start``, read from the bucket as they are sent (a ``storage.base.Body``).

    A ``sink`` hears every piece as it is sent: the local tier keeps a copy of
    a whole blob read this way.
    """

    store: ObjectStore
    key: str
    url: str = field(repr=False)  # a credential while it lives
    start: int
    count: int
    sink: Sink | None = None

    async def pieces(self) -> AsyncIterator[bytes]:
        if self.count == 0:
            return
        headers = {"Range": f"bytes={self.start}-{self.start + self.count - 1}"}
        received = 0
        try:
            async with self.store.session.get(self.url, headers=headers) as response:
                if response.status == 404:
                    raise ObjectMissing(f"s3://{self.store.bucket}/{self.key} is not in the bucket")
                if response.status not in (200, 206) or (response.status == 200 and self.start):
                    raise _Failed(RuntimeError(f"status {response.status}"))
                async for chunk in response.content.iter_chunked(READ):
                    chunk = chunk[:self.count - received]
                    received += len(chunk)
                    if self.sink is not None:
                        await self.sink.feed(chunk)
                    yield chunk
                    if received == self.count:
                        break
            if received != self.count:
                raise _Failed(EOFError(f"it ended at byte {received} of {self.count}"))
        except (TimeoutError, aiohttp.ClientError, _Failed) as exc:
            raise self.store.failed("reading", self.key, exc.cause if isinstance(exc, _Failed) else exc) from None
        finally:
            if self.sink is not None and received != self.count:
                self.sink.abandon()
        if self.sink is not None:
            await self.sink.finish()
