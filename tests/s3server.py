"""moto's standalone S3 server as a subprocess on loopback, for tests of the S3 storage backend.

It speaks the S3 REST protocol over HTTP, so the proxy's own boto3 and aiohttp
code talks to it exactly as to AWS, MinIO or Ceph RGW. ``stop()`` and
``start()`` take it down and bring it back on the same port (the "S3 is down"
tests); moto keeps everything in memory, so ``stop`` saves the buckets and
their objects and ``start`` puts them back. Multipart uploads in progress do
not survive a restart, as they would not survive a real outage of the client.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["AWS_ENV", "S3Server", "s3"]

# What the proxy (and this module's own client) authenticate with; moto accepts anything.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

_BUCKETS = itertools.count(1)


class S3Server:
    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log = log_dir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._saved: dict[str, dict[str, bytes]] = {}
        self._client: Any = None

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self, timeout: float = 20.0) -> None:
        binary = Path(sys.executable).with_name("moto_server")
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "moto.server"]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                          stderr=subprocess.STDOUT, env={**os.environ, **AWS_ENV})
        self._wait_ready(timeout)
        for bucket, objects in self._saved.items():
            self.client.create_bucket(Bucket=bucket)
            for key, data in objects.items():
                self.client.put_object(Bucket=bucket, Key=key, Body=data)
        self._saved = {}

    def stop(self, *, keep: bool = True) -> None:
        """End the server: its port refuses connections until ``start``, which puts back what it held (``keep``)."""
        if self._proc is None:
            return
        if keep:
            self._saved = {bucket: {key: self.read(bucket, key) for key in self.objects(bucket)}
                           for bucket in (b["Name"] for b in self.client.list_buckets()["Buckets"])}
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def client(self) -> Any:
        """A boto3 S3 client of the server, for the tests' own looks into the buckets."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=AWS_ENV["AWS_DEFAULT_REGION"],
                                        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        return self._client

    def fresh_bucket(self) -> str:
        name = f"test-{os.getpid()}-{next(_BUCKETS)}"
        self.client.create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object's key and size."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found.update((item["Key"], item["Size"]) for item in page.get("Contents", []))
        return found

    def read(self, bucket: str, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def open_uploads(self, bucket: str) -> list[tuple[str, str]]:
        """The multipart uploads begun and neither completed nor aborted: (key, upload id)."""
        listing = self.client.list_multipart_uploads(Bucket=bucket)
        return [(item["Key"], item["UploadId"]) for item in listing.get("Uploads", [])]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                pytest.fail(f"moto_server exited with {self._proc.returncode}:\n{self._log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server not ready on {self.endpoint_url} after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _require_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"moto's server is not installed: {exc}")
        pytest.skip(f"moto's server is not installed: {exc}")


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 server for the session; each test takes a ``fresh_bucket()``."""
    _require_moto()
    log_dir = Path(tempfile.mkdtemp(prefix="moto-"))
    server = S3Server(log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop(keep=False)
        shutil.rmtree(log_dir, ignore_errors=True)
