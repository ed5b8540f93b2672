"""S3Storage instances on the session's moto server and a fresh PostgreSQL database, closed after each test."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from proxy.reference import Digest
from proxy.storage.s3 import S3Storage

from ..s3server import AWS_ENV, S3Server

__all__ = ["Replicas", "S3Env", "digest_of", "eventually"]

# No AWS configuration of the machine running the tests may take part; a call to a stopped server fails at once.
_ISOLATION = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
              "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def eventually(condition: Callable[[], Any], *, within: float = 5.0, what: str = "the condition") -> float:
    """Wait until ``condition()`` is true; how long it took. Fails after ``within`` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


class Replicas(Protocol):
    def __call__(self, name: str = ..., **options: Any) -> Awaitable[S3Storage]: ...


class S3Env:
    def __init__(self, server: S3Server, bucket: str, pg_url: str, root: Path) -> None:
        self.server = server
        self.bucket = bucket
        self.pg_url = pg_url
        self.root = root
        self.opened: list[S3Storage] = []

    async def replica(self, name: str = "one", **options: Any) -> S3Storage:
        settings: dict[str, Any] = {"bucket": self.bucket, "state_url": self.pg_url, "max_size": 1 << 30,
                                    "local_size": 1 << 30, "endpoint_url": self.server.endpoint_url,
                                    "region": "us-east-1", "janitor_interval": None} | options
        storage = S3Storage(self.root / name, **settings)
        await storage.start()
        self.opened.append(storage)
        return storage

    def objects(self) -> dict[str, int]:
        return self.server.objects(self.bucket)

    def open_uploads(self) -> list[tuple[str, str]]:
        return self.server.open_uploads(self.bucket)

    async def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the shared database, behind the replicas' backs; the rows it returns."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.pg_url, autocommit=True) as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchall() if cursor.description else []


@pytest.fixture
async def s3env(s3: S3Server, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3Env]:
    for name, value in (AWS_ENV | _ISOLATION).items():
        monkeypatch.setenv(name, value)
    env = S3Env(s3, s3.fresh_bucket(), pg_url, tmp_path)
    try:
        yield env
    finally:
        if not s3.running:
            s3.start()
        for storage in env.opened:
            await storage.close()


