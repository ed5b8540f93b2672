"""registry.default warns when it can never work: outside the whitelist, or a private address not configured."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
from proxy.config.registries import RegistryConfig
from proxy.config.runtime import SETTING_DEFAULTS
from proxy.directory import LiveState
from proxy.store.credentials import RegistryStore
from proxy.store.crypto import SecretBox
from proxy.store.db import SqliteDatabase
from proxy.store.environments import EnvironmentStore
from proxy.store.runtime_settings import SettingsStore
from proxy.store.upstreams import UpstreamStore

WHITELIST = "the default registry {} is not in registry.whitelist: unprefixed pulls will now fail"
GUARDED = ("the default registry {} is a loopback or private address and not a configured registry, so the SSRF "
           "guard refuses it: unprefixed pulls will now fail; configure it under `registries:` or with "
           "`registry-proxy upstreams set`")


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveState]:
    db = SqliteDatabase(tmp_path / "state.db")
    await db.open()
    box = SecretBox(os.urandom(32))
    state = LiveState(registries=RegistryStore(db, box), settings=SettingsStore(db, SETTING_DEFAULTS),
                      upstreams=UpstreamStore(db, box), environments=EnvironmentStore(db),
                      configs={"10.1.2.3:5000": RegistryConfig("10.1.2.3:5000", endpoint="http://10.1.2.3:5000")})
    await state.settings.seed({name: None for name in SETTING_DEFAULTS})
    await state.reload()
    yield state
    await db.close()


async def warnings_for(live: LiveState, **values: str) -> list[str]:
    for name, value in values.items():
        await live.change(partial(live.settings.set, name, value))
    return live.setting_warnings()


async def test_a_usable_default_has_no_warning(live: LiveState) -> None:
    assert live.setting_warnings() == []
    assert await warnings_for(live, **{"registry.default": "quay.io"}) == []
    # A private address the operator configured is reached as configured.
    assert await warnings_for(live, **{"registry.default": "10.1.2.3:5000"}) == []


@pytest.mark.parametrize("default", ["127.0.0.1:5000", "localhost:5000", "192.168.1.10", "[::1]:5000"])
async def test_a_private_default_that_is_not_configured_warns(live: LiveState, default: str) -> None:
    assert await warnings_for(live, **{"registry.default": default}) == [GUARDED.format(default)]


async def test_a_default_outside_the_whitelist_warns_both_ways_at_once(live: LiveState) -> None:
    assert await warnings_for(live, **{"registry.whitelist": "quay.io"}) == [WHITELIST.format("docker.io")]
    assert await warnings_for(live, **{"registry.default": "127.0.0.1:5000"}) == [
        WHITELIST.format("127.0.0.1:5000"), GUARDED.format("127.0.0.1:5000")]
