"""Several proxies as one service: real processes on loopback sharing one PostgreSQL database and one S3 bucket.

Nothing sits in front of them; a test picks the replica each client talks to.
They share the secret key and the admin token, as the chart's pods do through
their Secret, and start together, as a Deployment's pods do.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..s3server import AWS_ENV, S3Server
from .admin import Admin
from .proxyproc import ProxyProcess, start_proxy
from .scrape import scrape
from .tools import log_tail


class Replicas:
    """``count`` replicas of one configuration; ``[0]`` is replica 1."""

    def __init__(self, base: Path, config: dict[str, Any], *, pg_url: str, s3: S3Server, bucket: str,
                 count: int = 3, redirect: bool = False) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.admin_token = secrets.token_urlsafe(24)
        self._env = {**AWS_ENV, "REGISTRY_PROXY_ADMIN_TOKEN": self.admin_token,
                     "REGISTRY_PROXY_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
        self._config = {**config,
                        "storage": {"backend": "s3", "bucket": bucket, "endpoint_url": s3.endpoint_url,
                                    "redirect": redirect, "local_size": "1GiB"},
                        "state": {"url": pg_url}}
        self._bases = [base / f"replica-{n}" for n in range(1, count + 1)]
        self.procs: list[ProxyProcess] = []

    def start(self) -> None:
        # Together, as a rollout starts its pods: migrations and start-up run side by side.
        with ThreadPoolExecutor(len(self._bases)) as pool:
            futures = [pool.submit(start_proxy, base, self._config, env=self._env) for base in self._bases]
        # Every replica that did start is kept, so stop() ends it even when another one failed.
        self.procs = [future.result() for future in futures if future.exception() is None]
        for future in futures:
            future.result()

    def __getitem__(self, index: int) -> ProxyProcess:
        return self.procs[index]

    def admin(self, index: int) -> Admin:
        return Admin(self.procs[index].host, self.admin_token)

    def metric(self, index: int, name: str, **labels: str) -> float:
        return scrape(self.procs[index])(name, **labels)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
            # Shown by pytest only when the test failed: each replica's side of the story.
            print(f"--- {proc.log_path} (tail) ---\n{log_tail(proc.log_path)}")

    # -- the bucket ----------------------------------------------------------

    def blob_key(self, digest: str) -> str:
        return f"blobs/sha256/{digest.removeprefix('sha256:')}"

    def blob_visible(self, digest: str) -> bool:
        return self.blob_key(digest) in self.s3.objects(self.bucket)

    def unverified_objects(self) -> list[str]:
        """Keys of content objects whose bytes do not hash to their name: what no reader may ever see."""
        bad = []
        for key in self.s3.objects(self.bucket):
            kind, _, rest = key.partition("/")
            algorithm, _, hex_digest = rest.partition("/")
            if kind not in ("blobs", "manifests") or algorithm != "sha256":
                continue
            if hashlib.sha256(self.s3.read(self.bucket, key)).hexdigest() != hex_digest:
                bad.append(key)
        return bad

    def open_uploads(self) -> list[tuple[str, str]]:
        return self.s3.open_uploads(self.bucket)

    def empty_bucket(self) -> None:
        """Drop what the test left, so the session's S3 server does not carry it (it copies its buckets to restart)."""
        client = self.s3.client
        for key, upload_id in self.open_uploads():
            client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        for key in self.s3.objects(self.bucket):
            client.delete_object(Bucket=self.bucket, Key=key)
