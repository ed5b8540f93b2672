"""proxy.postgres against a real server: placeholders, redaction, a pool that outlives its connections, a
listener that comes back and says so, and advisory locks that die with their session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from proxy.postgres.listen import Listener
from proxy.postgres.locks import SessionLocks, lock_key
from proxy.postgres.pool import PgConnection, PgPool, PgUnavailable, redact, translate

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


async def test_locks_on_an_unreachable_server_are_refused_not_raised() -> None:
    locks = SessionLocks("postgresql://proxy:pw@127.0.0.1:1/none")
    assert not await locks.try_lock(lock_key("x"))
    await locks.unlock(lock_key("x"))
    await locks.close()


async def test_a_malformed_url_is_not_quoted_with_its_password() -> None:
    pool = PgPool("postgresql://proxy:pw-in-url-77@127.0.0.1:notaport/db", name="test")
    with pytest.raises(PgUnavailable) as raised:
        await pool.open(0.2)
    await pool.close()
    assert "pw-in-url-77" not in str(raised.value)
