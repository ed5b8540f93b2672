"""PostgreSQL and an S3 server on 127.0.0.1 for the bench's S3 targets (--s3).

    us-s3        this proxy on storage.backend s3 with no local tier: every warm read comes from the bucket
    us-s3-tier   the same with the local disk tier: warm reads of what it downloaded come from its disk

The same servers the tests use (Debian's PostgreSQL, moto's S3 server); each
target has a database and a bucket of its own, so neither finds what the
other downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from tests.pgserver import PgServer, _bin_dir
from tests.s3server import AWS_ENV, S3Server

from bench.targets import TargetSpec

__all__ = ["s3_specs"]


@contextlib.contextmanager
def s3_specs(base: Path) -> Iterator[list[TargetSpec]]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise SystemExit("--s3 needs PostgreSQL's server binaries (apt-get install postgresql)")
    base.mkdir(parents=True, exist_ok=True)
    postgres = PgServer(bin_dir)
    s3 = S3Server(base)
    try:
        postgres.init()
        postgres.start()
        s3.start()
        env = {**AWS_ENV, "REGISTRY_PROXY_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
               "REGISTRY_PROXY_ADMIN_TOKEN": secrets.token_urlsafe(24)}
        yield [TargetSpec(name, "proxy", env=env, proxy_config={
            "storage": {"backend": "s3", "bucket": s3.fresh_bucket(), "endpoint_url": s3.endpoint_url,
                        "local_size": local_size},
            "state": {"url": postgres.fresh_database()},
        }) for name, local_size in (("us-s3", 0), ("us-s3-tier", "10GiB"))]
    finally:
        if s3.running:
            s3.stop(keep=False)
        postgres.cleanup()
