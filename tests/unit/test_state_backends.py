"""The stores give the same answers on SQLite and on PostgreSQL, from one SQL text.

One scenario of admin operations runs against each engine and the two
transcripts must be equal (timestamps aside); PostgreSQL runs in a cluster
of the tests' own (tests/pgserver.py).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from proxy.config.runtime import SETTING_DEFAULTS
from proxy.credentials.kinds import CredentialInput
from proxy.store.credentials import ManagedByConfig, NotFound, RegistryStore
from proxy.store.crypto import SecretBox
from proxy.store.db import Database, SqliteDatabase
from proxy.store.environments import AlreadyExists, EnvironmentStore, InUse, Protected
from proxy.store.postgres import PostgresDatabase
from proxy.store.runtime_settings import SettingsStore
from proxy.store.sealed import forget, sealed_secrets, undecryptable
from proxy.store.upstreams import UpstreamRecord, UpstreamStore

KEY = os.urandom(32)
_VARYING = ("created", "updated", "last_used", "hash", "sealed")


@dataclasses.dataclass(frozen=True)
class Key:
    id: str
    secret: str


@dataclasses.dataclass(frozen=True)
class Env:
    name: str
    anonymous_pull: bool = False
    anonymous_from: tuple[str, ...] = ()
    keys: tuple[Key, ...] = ()


async def open_db(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Database:
    db: Database = (SqliteDatabase(tmp_path / "state.db") if kind == "sqlite"
                    else PostgresDatabase(request.getfixturevalue("pg_url")))
    await db.open()
    return db


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(request.param, tmp_path, request)
    yield database
    await database.close()


def plain(value: Any) -> Any:
    """Records as comparable data: timestamps, salted hashes and sealed bytes only as set or not."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: (f"<{k}>" if k in _VARYING and v is not None else plain(v))
                for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


async def outcome(call: Awaitable[Any]) -> Any:
    try:
        return plain(await call)
    except (NotFound, ManagedByConfig, AlreadyExists, InUse, Protected) as exc:
        return f"{type(exc).__name__}: {exc}"


async def scenario(db: Database) -> list[Any]:
    box = SecretBox(KEY)
    registries, settings = RegistryStore(db, box), SettingsStore(db, SETTING_DEFAULTS)
    upstreams, envs = UpstreamStore(db, box), EnvironmentStore(db)
    log: list[Any] = []
    step: Callable[[Awaitable[Any]], Awaitable[None]] = lambda call: _append(log, call)  # noqa: E731

    await step(envs.add("team-a", anonymous_pull=False, anonymous_from=("10.0.0.0/8",)))
    await step(envs.add("team-a", anonymous_pull=True, anonymous_from=()))
    await step(envs.update("team-a", anonymous_pull=True, anonymous_from=()))
    await step(envs.add("Zeta", anonymous_pull=True, anonymous_from=()))
    await step(envs.add("_under", anonymous_pull=True, anonymous_from=()))
    await envs.sync_config({"cfg": Env("cfg", keys=(Key("pk-config", "config-secret"),))})
    await registries.sync_config({("cfg", "cfg.example"): CredentialInput("basic", "", "bot", "s1", {}, "cfg")})
    await step(envs.all())
    await step(envs.update("cfg", anonymous_pull=True, anonymous_from=()))

    await step(registries.add(address="r.example", email="", username="u1", password="p1"))
    await step(registries.add(address="r.example", email="e@x", username="u2", password=None, kind="ecr",
                              options={"region": "eu-west-1"}, environment="team-a"))
    await step(registries.add(address="r.example", email="", username="u3", password="p3", environment="nope"))
    await step(registries.update(2, email="new@x", username="u1b", password="p1b"))
    await step(registries.set_active(2, False))
    await step(registries.set_active(99, True))
    await step(registries.delete(1))  # the config file's
    await step(registries.all())

    await step(settings.set("registry.default", "mirror.example"))
    await settings.seed({"registry.default": "file.example", "registry.whitelist": "a.example,b.example"})
    await step(settings.all())
    await step(settings.unset("registry.default"))
    await step(settings.all())

    for address in ("b.example", "B.example", "a.example:5000", "_x.example"):
        await step(upstreams.put(UpstreamRecord(address, endpoint=f"https://{address}", token_realms=("r",),
                                                client_key="KEY" if address == "b.example" else None,
                                                alias=address.split(".")[0])))
    await step(upstreams.all())
    await step(upstreams.delete("B.example"))
    await step(upstreams.delete("B.example"))

    key = await envs.add_key("team-a", "pk-1", "secret-1")
    await step(envs.add_key("team-a", "pk-1", "secret-2"))
    await step(envs.add_key("nope", "pk-2", "secret-2"))
    await envs.record_use({"pk-1": key.created + 5, "pk-config": key.created + 6})
    await step(envs.keys())
    await step(envs.delete_key("pk-config"))
    await step(envs.delete("team-a", force=False))
    await step(envs.delete("default", force=True))
    await step(envs.delete("team-a", force=True))
    await step(envs.delete_key("pk-1"))
    await step(envs.all())
    await step(registries.all())

    log.append(plain(await db.read(sealed_secrets)))
    other = SecretBox(os.urandom(32))
    lost = await db.read(lambda conn: undecryptable(conn, other))
    log.append(plain(lost))
    await db.transaction(lambda conn: forget(conn, lost))
    await db.checkpoint()
    log.append(plain(await db.read(sealed_secrets)))
    await step(registries.all())
    await step(upstreams.all())
    return log


async def _append(log: list[Any], call: Awaitable[Any]) -> None:
    log.append(await outcome(call))


async def test_the_stores_answer_alike_on_sqlite_and_postgresql(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    transcripts = {}
    for kind in ("sqlite", "postgres"):
        db = await open_db(kind, tmp_path / kind, request)
        try:
            transcripts[kind] = await scenario(db)
        finally:
            await db.close()
    for number, (lite, pg) in enumerate(zip(transcripts["sqlite"], transcripts["postgres"], strict=True)):
        assert pg == lite, f"step {number}"
    log = transcripts["postgres"]
    # A few anchors, so "alike" is not "alike and wrong".
    assert log[1] == "AlreadyExists: team-a"
    assert [env["name"] for env in log[5]] == ["Zeta", "_under", "cfg", "default", "team-a"]
    assert log[6] == "ManagedByConfig: cfg"
    assert (log[7]["id"], log[7]["password"], log[8]["id"], log[13]) == (2, "p1", 3, "ManagedByConfig: 1")
    assert [u["address"] for u in log[23]] == ["B.example", "_x.example", "a.example:5000", "b.example"]
    assert log[30] == "InUse: 1 registry credential(s) and 1 pull key(s)"
    assert (len(log[37]), log[38]) == (2, [])
    assert [(r["id"], r["active"], r["password"]) for r in log[39]] == [(1, True, "s1"), (2, False, None)]


async def test_ids_and_upserts_are_the_same_sql_on_both(db: Database) -> None:
    registries = RegistryStore(db, SecretBox(KEY))
    first = await registries.add(address="r.example", email="", username="a", password="x")
    second = await registries.add(address="r.example", email="", username="b", password="y")
    assert second.id == first.id + 1
    assert [(r.username, r.password) for r in await registries.all()] == [("a", "x"), ("b", "y")]
    settings = SettingsStore(db, SETTING_DEFAULTS)
    await settings.set("registry.default", "one.example")
    await settings.set("registry.default", "two.example")
    assert (await settings.all())["registry.default"].value == "two.example"


def test_the_sqlite_stores_do_not_load_the_postgresql_package() -> None:
    # The rows and cursors the stores are typed with belong to proxy.store.db; proxy.postgres only satisfies them.
    code = ("import sys, proxy.store.credentials, proxy.store.environments, proxy.store.upstreams, proxy.store.choose; "
            "print(sorted(name for name in sys.modules if name.startswith('proxy.postgres')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
