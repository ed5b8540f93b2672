"""The state in PostgreSQL: migrations replicas may run together, changes heard by every replica, secrets sealed
at rest, errors that name the server and never the password, and what start-up refuses to make up."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from aiohttp import web
from proxy.api.state import LIVE
from proxy.app import create_app
from proxy.config.runtime import SETTING_DEFAULTS
from proxy.config.settings import Settings, SettingsError, StateSettings
from proxy.postgres.pool import PgUnavailable
from proxy.store import postgres as store_postgres
from proxy.store.admin_token import ADMIN_TOKEN_ENV, AdminTokenError
from proxy.store.credentials import RegistryStore
from proxy.store.crypto import KEY_ENV, SecretBox, SecretError
from proxy.store.postgres import MIGRATIONS, PostgresDatabase
from proxy.store.runtime_settings import SettingsStore
from proxy.store.upstreams import UpstreamRecord, UpstreamStore

from ..pgserver import PgServer

WAIT = 5.0
SECRET_KEY = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="  # base64 of 32 bytes


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase(pg_url)
    await database.open()
    yield database
    await database.close()


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    replicas = [PostgresDatabase(pg_url) for _ in range(4)]
    await asyncio.gather(*(replica.open() for replica in replicas))
    again = PostgresDatabase(pg_url)
    await again.open()
    for replica in [*replicas, again]:
        await replica.close()
    assert rows(pg_url, "SELECT version FROM state_schema") == [(len(MIGRATIONS),)]
    assert rows(pg_url, "SELECT name, source FROM environments") == [("default", "api")]


async def test_a_write_on_one_replica_is_heard_on_another_within_a_second(pg_url: str, db: PostgresDatabase) -> None:
    other = PostgresDatabase(pg_url)
    await other.open()
    heard = asyncio.Event()
    watching = asyncio.create_task(other.watch(heard.set))
    try:
        # The first call says "listening now: anything may have changed meanwhile".
        await asyncio.wait_for(heard.wait(), WAIT)
        heard.clear()
        start = time.monotonic()
        await SettingsStore(db, SETTING_DEFAULTS).set("registry.default", "mirror.example")
        await asyncio.wait_for(heard.wait(), WAIT)
        assert time.monotonic() - start < 1.0
        assert (await SettingsStore(other, SETTING_DEFAULTS).all())["registry.default"].value == "mirror.example"
        # A read alone says nothing.
        heard.clear()
        await SettingsStore(db, SETTING_DEFAULTS).all()
        await SettingsStore(db, SETTING_DEFAULTS).set("registry.whitelist", "x.example")
        await asyncio.wait_for(heard.wait(), WAIT)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await other.close()


async def test_secrets_are_sealed_in_the_tables(pg_url: str, db: PostgresDatabase) -> None:
    box = SecretBox(os.urandom(32))
    await RegistryStore(db, box).add(address="r.example", email="", username="u", password="plain-password-1")
    await UpstreamStore(db, box).put(UpstreamRecord("u.example", client_key="plain-client-key-1"))
    dump = repr(rows(pg_url, "SELECT * FROM registries")) + repr(rows(pg_url, "SELECT * FROM upstreams"))
    assert "plain-password-1" not in dump and "plain-client-key-1" not in dump
    assert [r.password for r in await RegistryStore(db, box).all()] == ["plain-password-1"]


async def test_an_unreachable_server_is_named_without_the_password() -> None:
    with socketless_port() as port:
        database = PostgresDatabase(f"postgresql://proxy:hunter2-secret@127.0.0.1:{port}/statedb", wait=0.3)
        with pytest.raises(PgUnavailable) as raised:
            await database.open()
        await database.close()
    message = str(raised.value)
    assert f"host 127.0.0.1, port {port}, database statedb" in message
    assert "hunter2" not in message


async def test_a_wrong_password_fails_at_once_and_is_not_repeated(postgres: PgServer) -> None:
    database = PostgresDatabase(postgres.url(password="wrong-password-9"), wait=30)
    start = time.monotonic()
    with pytest.raises(PgUnavailable) as raised:
        await database.open()
    await database.close()
    assert time.monotonic() - start < 5
    assert "password authentication failed" in str(raised.value)
    assert "wrong-password-9" not in str(raised.value) and postgres.password not in str(raised.value)


def shared(tmp_path: Path, pg_url: str, name: str) -> Settings:
    return Settings(data_dir=tmp_path / name, secret_key_file=tmp_path / f"{name}.key", state=StateSettings(url=pg_url))


async def test_shared_state_never_makes_up_a_secret_key_or_an_admin_token(tmp_path: Path, pg_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(SecretError, match=rf"\${KEY_ENV} .*or secrets.key_file"):
        await web.AppRunner(create_app(shared(tmp_path, pg_url, "a"))).setup()
    assert not (tmp_path / "a.key").exists()
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    with pytest.raises(AdminTokenError, match=rf"\${ADMIN_TOKEN_ENV} or admin.token_file"):
        await web.AppRunner(create_app(shared(tmp_path, pg_url, "a"))).setup()
    assert not (tmp_path / "a" / "admin-token").exists()


async def test_start_up_with_an_unreachable_state_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    with socketless_port() as port:
        settings = shared(tmp_path, f"postgresql://proxy:hunter2-secret@127.0.0.1:{port}/statedb", "a")
        monkeypatch.setattr(store_postgres, "OPEN_WAIT", 0.3)
        with pytest.raises(SettingsError, match=f"Config 'state.url'.*port {port}, database statedb") as raised:
            await web.AppRunner(create_app(settings)).setup()
    assert "hunter2" not in str(raised.value)


async def test_a_change_through_one_replica_reaches_the_other(tmp_path: Path, pg_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "a-token-shared-by-the-replicas")
    first, second = (web.AppRunner(create_app(shared(tmp_path, pg_url, name))) for name in ("one", "two"))
    await first.setup()
    await second.setup()
    try:
        one, two = first.app[LIVE], second.app[LIVE]
        start = time.monotonic()
        added = await one.change(lambda: one.registries.add(address="r.example", email="", username="u",
                                                           password="p"))
        while not any(record.id == added.id for record in two.records):
            assert time.monotonic() - start < 1.0, "the second replica did not reload within 1 s"
            await asyncio.sleep(0.01)
        assert two.in_use[("default", "r.example")].password == "p"
    finally:
        await first.cleanup()
        await second.cleanup()


class socketless_port:  # noqa: N801 - used as a context manager, like a function
    """A loopback port nothing listens on, held bound (not listening) so nobody takes it meanwhile."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
