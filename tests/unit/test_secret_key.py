"""Where the secret key comes from, when a key file may be created, and giving up secrets it cannot open."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy.config.settings import KEY_FILE_ENV, load_settings
from proxy.credentials.kinds import CredentialInput
from proxy.store.credentials import RegistryStore
from proxy.store.crypto import KEY_ENV, KeyMissing, SecretBox, SecretError, key_origin, load_key
from proxy.store.db import SqliteDatabase
from proxy.store.sealed import forget, sealed_secrets, undecryptable
from proxy.store.upstreams import UpstreamRecord, UpstreamStore


def key_text() -> tuple[bytes, str]:
    key = os.urandom(32)
    return key, base64.b64encode(key).decode()


def test_the_variable_wins_over_the_file_and_nothing_is_written(tmp_path: Path) -> None:
    key, text = key_text()
    on_disk, disk_text = key_text()
    key_file = tmp_path / "data.key"
    assert load_key(key_file, {KEY_ENV: text}) == key
    assert not key_file.exists()
    key_file.write_text(disk_text + "\n")
    assert load_key(key_file, {KEY_ENV: text}) == key
    assert load_key(key_file, {}) == on_disk
    assert key_origin(key_file, {KEY_ENV: text}) == f"${KEY_ENV}"
    assert key_origin(key_file, {}) == str(key_file)


def test_a_missing_file_is_created_private_once_when_allowed(tmp_path: Path) -> None:
    key_file = tmp_path / "sub" / "data.key"
    key = load_key(key_file, {})
    assert len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert base64.b64decode(key_file.read_text().strip()) == key
    assert load_key(key_file, {}) == key


def test_a_missing_file_is_not_created_when_not_allowed(tmp_path: Path) -> None:
    key_file = tmp_path / "data.key"
    with pytest.raises(KeyMissing) as info:
        load_key(key_file, {}, create=False)
    assert str(info.value) == f"{key_file} does not exist and ${KEY_ENV} is not set"
    assert not key_file.exists()
    # The variable needs no file.
    key, text = key_text()
    assert load_key(key_file, {KEY_ENV: text}, create=False) == key


@pytest.mark.parametrize("content,message", [("not base64!", "is not base64"),
                                             (base64.b64encode(b"short").decode(), "must be 32 bytes, not 5")])
def test_a_damaged_key_names_where_it_is(tmp_path: Path, content: str, message: str) -> None:
    key_file = tmp_path / "data.key"
    key_file.write_text(content)
    with pytest.raises(SecretError, match=f"secret key in {key_file} {message}"):
        load_key(key_file, {})
    with pytest.raises(SecretError, match=f"secret key in {KEY_ENV} {message}"):
        load_key(key_file, {KEY_ENV: content})
    assert key_file.read_text() == content


def test_an_unreadable_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    key_file = tmp_path / "data.key"
    key_file.mkdir()
    with pytest.raises(SecretError, match=f"the secret key file {key_file} cannot be read"):
        load_key(key_file, {})


def test_the_key_file_variable_applies_only_where_the_config_names_none(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, data_dir="/data", environ={}).key_file == Path("/data.key")
    assert load_settings(None, data_dir="/data", environ={KEY_FILE_ENV: "/data/secret.key"}).key_file == \
        Path("/data/secret.key")
    # Relative, it is taken from the working directory, as paths in the file are.
    assert load_settings(None, environ={KEY_FILE_ENV: "keys/secret.key"}).key_file == tmp_path / "keys/secret.key"
    config = tmp_path / "config.yaml"
    config.write_text("secrets:\n  key_file: /etc/registry-proxy/secret.key\n")
    assert load_settings(config, environ={KEY_FILE_ENV: "/data/secret.key"}).key_file == \
        Path("/etc/registry-proxy/secret.key")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "state.db")
    await database.open()
    yield database
    await database.close()


async def test_only_secrets_the_key_cannot_open_are_given_up(db: SqliteDatabase) -> None:
    old, new = SecretBox(os.urandom(32)), SecretBox(os.urandom(32))
    old_registries, new_registries = RegistryStore(db, old), RegistryStore(db, new)
    lost = await old_registries.add(address="quay.io", email="", username="robot", password="lost")
    kept = await new_registries.add(address="ghcr.io", email="", username="me", password="kept")
    await RegistryStore(db, old).add(address="ecr.example.com", email="", username="", password=None, kind="ecr")
    await UpstreamStore(db, old).put(UpstreamRecord("registry.example.com:5000", client_cert="CERT",
                                                    client_key="KEY"))
    # A config file's credential is sealed again from the file at every start: it does not count.
    from_file = {("default", "docker.io"): CredentialInput("basic", "", "hub", "from-file", {})}
    await old_registries.sync_config(from_file)
    assert len(await db.read(sealed_secrets)) == 3

    unreadable = await db.read(lambda conn: undecryptable(conn, new))
    assert [(s.table, s.key, s.address, s.username, s.what) for s in unreadable] == [
        ("registries", str(lost.id), "quay.io", "robot", "password"),
        ("upstreams", "registry.example.com:5000", "registry.example.com:5000", "", "client key")]
    assert len(await db.read(lambda conn: undecryptable(conn, None))) == 3

    await db.transaction(lambda conn: forget(conn, unreadable))
    assert await db.read(lambda conn: undecryptable(conn, new)) == []
    await new_registries.sync_config(from_file)  # as the next start does
    records = {r.id: r for r in await new_registries.all()}
    assert (records[lost.id].active, records[lost.id].password) == (False, None)
    assert (records[kept.id].active, records[kept.id].password) == (True, "kept")
    [upstream] = await UpstreamStore(db, new).all()
    assert (upstream.client_cert, upstream.client_key) == (None, None)


async def test_a_secret_replaced_meanwhile_is_not_given_up(db: SqliteDatabase) -> None:
    old, new = SecretBox(os.urandom(32)), SecretBox(os.urandom(32))
    record = await RegistryStore(db, old).add(address="quay.io", email="", username="robot", password="lost")
    unreadable = await db.read(lambda conn: undecryptable(conn, new))
    await RegistryStore(db, new).update(record.id, email="", username="robot", password="entered again")
    await db.transaction(lambda conn: forget(conn, unreadable))
    [kept] = await RegistryStore(db, new).all()
    assert (kept.active, kept.password) == (True, "entered again")


async def test_the_store_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.touch(mode=0o644)
    state.chmod(0o644)
    previous = os.umask(0o022)
    try:
        db = SqliteDatabase(state)
        await db.open()
        await db.transaction(lambda conn: conn.execute("INSERT INTO settings VALUES ('a', 'b', 'api', 0)"))
        files = [state, tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
        await db.close()
    finally:
        os.umask(previous)
