"""/readyz is open to anyone: a failed check says what failed, never where (host, port, database, user, bucket)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from proxy.api.health import readiness
from proxy.api.state import LIVE, SERVICES, SETTINGS
from proxy.postgres.pool import failure
from proxy.storage.base import StorageUnavailable

STATE_URL = "postgresql://proxy_user:hunter2@db.internal:6543/proxy_state"


class _Failing:
    def __init__(self, exc: Exception) -> None:
        self._exc = exc

    async def ping(self) -> None:
        raise self._exc

    async def check_writable(self) -> None:
        raise self._exc

    async def free_space(self) -> int:
        return 1 << 40


def app_with(store: Exception, storage: Exception) -> web.Application:
    app = web.Application()
    fake: Any = _Failing(store)
    app[LIVE] = fake
    services: Any = SimpleNamespace(storage=_Failing(storage))
    app[SERVICES] = services
    settings: Any = SimpleNamespace(cache=SimpleNamespace(min_free=1))
    app[SETTINGS] = settings
    return app


async def test_failed_checks_name_no_server_and_the_log_has_the_detail(caplog: pytest.LogCaptureFixture) -> None:
    down = failure(STATE_URL, OSError("connection refused"))
    bucket = StorageUnavailable("bucket proxy-cache at http://minio.internal:9000: connection refused")
    with caplog.at_level(logging.WARNING, logger="proxy.api.health"):
        checks = await readiness(app_with(down, bucket))
    assert checks == {"store": "failed: the state database cannot be reached",
                      "cache_writable": "failed: the cache's storage cannot be reached", "free_space": "ok"}
    logged = caplog.text
    assert "db.internal" in logged and "6543" in logged and "minio.internal" in logged
    assert "hunter2" not in logged


async def test_an_unwritable_disk_says_why_without_the_path() -> None:
    read_only = OSError(30, "Read-only file system", "/var/lib/registry-proxy/cache/tmp/ready-x")
    checks = await readiness(app_with(RuntimeError("x"), read_only))
    assert checks["cache_writable"] == "failed: Read-only file system"
