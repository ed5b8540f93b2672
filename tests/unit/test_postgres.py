"""proxy.postgres against a real server: placeholders, redaction, a pool that outlives its connections, a
listener that comes back and says so, and advisory locks that die with their session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from proxy.postgres import locks as locks_module
from proxy.postgres.listen import Listener
from proxy.postgres.locks import SessionLocks, lock_key
from proxy.postgres.migrate import SchemaTooNew, migrate
from proxy.postgres.pool import PgConnection, PgPool, PgUnavailable, redact, translate
from proxy.storage import shared_index

WAIT = 5.0


def kill_sessions(url: str, where: str) -> int:
    """Terminate this database's other sessions whose current or last query matches ``where`` (a LIKE pattern)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                              " AND pid <> pg_backend_pid() AND query LIKE %s", (where,))
        return len(cursor.fetchall())


async def until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT ? , ?", "SELECT %s , %s"),
    ("SELECT '?', \"a?\" WHERE x LIKE 'a%' AND y = ?", "SELECT '?', \"a?\" WHERE x LIKE 'a%%' AND y = %s"),
    ("SELECT 'it''s ?' || ?", "SELECT 'it''s ?' || %s"),
    ("SELECT 5 % 3", "SELECT 5 %% 3"),
])
def test_sqlite_placeholders_become_psycopg_ones(sql: str, expected: str) -> None:
    assert translate(sql) == expected


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://proxy:s3cret@db:5432/state", "postgresql://proxy:***@db:5432/state"),
    ("postgresql://proxy@db/state", "postgresql://proxy@db/state"),
    ("postgres://db/state?sslmode=require&password=s3cret", "postgres://db/state?sslmode=require&password=***"),
    ("postgresql://proxy:p%40ss@db/state", "postgresql://proxy:***@db/state"),
])
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


async def test_a_transaction_commits_or_rolls_back_whole(pg_url: str) -> None:
    pool = PgPool(pg_url, name="test", size=2)
    await pool.open()
    try:
        await pool.transaction(lambda c: c.execute("CREATE TABLE t (id serial PRIMARY KEY, name text)"))

        def fails(conn: PgConnection) -> None:
            conn.execute("INSERT INTO t (name) VALUES (?)", ("lost",))
            raise KeyError("no")

        with pytest.raises(KeyError):
            await pool.transaction(fails)
        row = await pool.transaction(lambda c: c.execute("INSERT INTO t (name) VALUES (?) RETURNING id, name",
                                                         ("kept",)).fetchone())
        assert row is not None and (row[0], row["name"]) == (2, "kept")
        names = await pool.transaction(lambda c: [r["name"] for r in c.execute("SELECT name FROM t").fetchall()])
        assert names == ["kept"]
    finally:
        await pool.close()


async def test_the_pool_replaces_connections_the_server_dropped(pg_url: str) -> None:
    pool = PgPool(pg_url, name="test", size=2)
    await pool.open()
    try:
        await pool.transaction(lambda c: c.execute("SELECT 'before'"))
        assert kill_sessions(pg_url, "%") >= 1
        row = await pool.transaction(lambda c: c.execute("SELECT 41 + 1").fetchone())
        assert row is not None and row[0] == 42
    finally:
        await pool.close()


async def test_a_notify_is_heard_after_commit_and_a_reconnect_is_reported(pg_url: str) -> None:
    pool = PgPool(pg_url, name="test")
    await pool.open()
    heard: list[tuple[str, str]] = []
    listener = Listener(pg_url, ["news", "other"], lambda channel, payload: heard.append((channel, payload)))
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.ready.wait(), WAIT)
        assert heard == [("news", ""), ("other", "")]

        def rolled_back(conn: PgConnection) -> None:
            conn.notify("news", "never")
            raise KeyError("no")

        with pytest.raises(KeyError):
            await pool.transaction(rolled_back)
        await pool.transaction(lambda c: c.notify("news", "+a:1"))
        await until(lambda: ("news", "+a:1") in heard)
        assert ("news", "never") not in heard
        heard.clear()
        assert kill_sessions(pg_url, "LISTEN%") == 1
        # Back, and saying that anything may have changed while it was away.
        await until(lambda: heard[:2] == [("news", ""), ("other", "")])
        await pool.transaction(lambda c: c.notify("other", "again"))
        await until(lambda: ("other", "again") in heard)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()


async def test_advisory_locks_are_exclusive_and_die_with_their_session(pg_url: str) -> None:
    one, two = SessionLocks(pg_url), SessionLocks(pg_url)
    await one.open()
    await two.open()
    key = lock_key("fill:sha256:abc")
    try:
        assert lock_key("fill:sha256:abc") == key and -(2**63) <= key < 2**63
        assert await one.try_lock(key)
        assert not await one.try_lock(key), "not reentrant within the process"
        assert not await two.try_lock(key)
        await one.unlock(key)
        assert await two.try_lock(key)
        # The holder's session dies (as when its process does): the lock is free for the other.
        assert kill_sessions(pg_url, "%pg_try_advisory_lock%") >= 1
        assert await one.try_lock(key)
        # The dead session's holder is told no more than "not yours": no error.
        await two.unlock(key)
    finally:
        await one.close()
        await two.close()


async def test_sessions_ask_the_server_to_notice_a_vanished_client_within_seconds(pg_url: str) -> None:
    # The server drops a dead session's advisory locks only once it sees the session end: a node that crashed
    # sends no FIN, so the server's own keepalives must be short, not the OS's two hours.
    expected = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "2",
                "tcp_user_timeout": "20000"}
    locks = SessionLocks(pg_url)
    await locks.open()
    pool = PgPool(f"{pg_url}?options=-c%20statement_timeout%3D4321", name="test", size=1)
    await pool.open()
    try:
        assert locks._conn is not None
        for name, value in expected.items():
            cursor = await locks._conn.execute(f"SHOW {name}")
            assert await cursor.fetchone() == (value,), name
            row = await pool.transaction(lambda c, name=name: c.execute(f"SHOW {name}").fetchone())
            assert row is not None and row[0] == value, name
        # Options of the URL's own are kept beside them.
        row = await pool.transaction(lambda c: c.execute("SHOW statement_timeout").fetchone())
        assert row is not None and row[0] == "4321ms"
    finally:
        await locks.close()
        await pool.close()


async def test_locks_on_an_unreachable_server_raise_and_fail_fast_for_a_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that hangs up on every connection, counting the attempts.
    attempts = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(locks_module, "_RETRY_AFTER", 0.3)
    locks = SessionLocks(f"postgresql://proxy:pw-77@127.0.0.1:{port}/none")
    try:
        with pytest.raises(PgUnavailable) as raised:
            await locks.try_lock(lock_key("x"))
        assert f"port {port}" in str(raised.value) and "pw-77" not in str(raised.value)
        tried = attempts
        assert tried >= 1
        # Unknown is not "held": every caller is told so at once, and nobody connects again for a moment.
        results = await asyncio.gather(*(locks.try_lock(lock_key(f"k{i}")) for i in range(5)), return_exceptions=True)
        assert all(isinstance(result, PgUnavailable) for result in results)
        assert attempts == tried
        await asyncio.sleep(0.35)  # the moment passes: the next caller tries the server again
        with pytest.raises(PgUnavailable):
            await locks.try_lock(lock_key("x"))
        assert attempts > tried
        await locks.unlock(lock_key("x"))
    finally:
        await locks.close()
        server.close()
        await server.wait_closed()


async def test_locks_raise_when_their_session_is_gone_and_reconnect_after(pg_url: str) -> None:
    locks = SessionLocks(pg_url)
    await locks.open()
    try:
        assert await locks.try_lock(lock_key("a"))
        assert kill_sessions(pg_url, "%pg_try_advisory_lock%") == 1
        with pytest.raises(PgUnavailable):
            await locks.try_lock(lock_key("b"))
        # A new session: the old one's lock went with it.
        assert await locks.try_lock(lock_key("a"))
    finally:
        await locks.close()


async def test_migrations_run_once_in_order_and_a_newer_schema_is_refused(pg_url: str) -> None:
    steps = ["CREATE TABLE things (id integer); INSERT INTO things VALUES (1)", "INSERT INTO things VALUES (2)"]
    pool = PgPool(pg_url, name="test")
    await pool.open()
    try:
        await asyncio.gather(*(pool.transaction(lambda c: migrate(c, "demo", steps[:1])) for _ in range(3)))
        await pool.transaction(lambda c: migrate(c, "demo", steps))
        await pool.transaction(lambda c: migrate(c, "demo", steps))
        rows = await pool.transaction(lambda c: [r[0] for r in c.execute("SELECT id FROM things ORDER BY id")
                                                 .fetchall()])
        assert rows == [1, 2]
        # An older registry-proxy (knowing one step) meets the schema a newer one made.
        with pytest.raises(SchemaTooNew, match="demo tables .* schema version 2, newer than this registry-proxy "
                                                r"knows \(1\)"):
            await pool.transaction(lambda c: migrate(c, "demo", steps[:1]))
        with pytest.raises(SchemaTooNew):
            await pool.transaction(cache_migrate_of_an_older_version)
    finally:
        await pool.close()


def cache_migrate_of_an_older_version(conn: PgConnection) -> None:
    shared_index.migrate(conn)
    conn.execute("UPDATE cache_schema SET version = version + 1")
    shared_index.migrate(conn)


async def test_a_malformed_url_is_not_quoted_with_its_password() -> None:
    pool = PgPool("postgresql://proxy:pw-in-url-77@127.0.0.1:notaport/db", name="test")
    with pytest.raises(PgUnavailable) as raised:
        await pool.open(0.2)
    await pool.close()
    assert "pw-in-url-77" not in str(raised.value)
