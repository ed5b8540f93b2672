"""Transactions on PostgreSQL in worker threads, with sqlite3's ``?`` placeholders and rows.

psycopg's sync connections come from a psycopg_pool pool that checks each
one before handing it out, so a connection the server dropped is replaced,
not failed on. Each pool has its own threads, as many as connections, so a
transaction never waits for a thread another library holds. Messages name
the server and database (``description``), never the password.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["PgConnection", "PgPool", "PgUnavailable", "connect_kwargs", "redact", "where"]

T = TypeVar("T")

# libpq's TCP keepalives: a peer that vanished without closing is noticed in about 20 s, not hours.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                              "keepalives_count": 2, "connect_timeout": 5}
# The same for the server's end of the session: PostgreSQL drops a session's advisory locks only once it sees the
# session end, and a node that crashed or was cut off sends no FIN. Any role may set these.
SERVER_KEEPALIVES = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2"
                     " -c tcp_user_timeout=20000")

# SQLSTATEs worth waiting out at start: the server is starting, shutting down or refusing for now.
_TRANSIENT = {"57P03", "53300", "08000", "08001", "08006"}
_PASSING = ("the database system is starting up", "the database system is shutting down",
            "the database system is in recovery mode", "too many clients", "connection slots are reserved")


class PgUnavailable(Exception):
    """The database cannot be reached or used; the message names host, port and database, never the password."""


def redact(url: str) -> str:
    """The URL with its password, in the userinfo or in a ``password=`` parameter, replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = re.sub(r"(?i)(^|&)password=[^&]*", r"\1password=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect_kwargs(url: str) -> dict[str, Any]:
    """Keyword arguments for psycopg's connect: both ends' keepalives, after the URL's (or PGOPTIONS') own options."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        own = conninfo_to_dict(url).get("options") or os.environ.get("PGOPTIONS")
    except ProgrammingError:
        own = None  # connect reports the malformed URL
    return {**KEEPALIVES, "options": f"{own} {SERVER_KEEPALIVES}" if own else SERVER_KEEPALIVES}


def where(url: str) -> str:
    """'host H, port P, database D' as libpq resolves them (the URL, then PGHOST and the like)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError:
        return "an unparsable PostgreSQL URL"
    host = params.get("host") or os.environ.get("PGHOST") or "the local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or os.environ.get("PGUSER") or "?"
    return f"host {host}, port {port}, database {db}"


def failure(url: str, exc: BaseException) -> PgUnavailable:
    """``exc`` (from psycopg) as a PgUnavailable naming where, without the password."""
    detail = str(exc).strip().replace("\n", " ") or type(exc).__name__
    # libpq does not repeat a password, but its complaint about a malformed URL may quote the URL.
    for secret in _passwords(url):
        detail = detail.replace(secret, "***")
    return PgUnavailable(f"PostgreSQL at {where(url)} ({redact(url)}) is not usable: {detail}")


def _passwords(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password or "", unquote(parts.password or "")]
    found += [unquote(value) for value in re.findall(r"(?i)(?:^|&)password=([^&]*)", parts.query)]
    return [secret for secret in found if secret]


def transient(exc: BaseException) -> bool:
    """Whether a failed connection may succeed later (not a wrong password or database name)."""
    state = getattr(exc, "sqlstate", None)
    if state is not None:
        return state in _TRANSIENT
    # libpq reports a refusal at connect without its SQLSTATE: a FATAL is the server's answer, final unless it
    # says the server is starting, stopping or full.
    text = str(exc)
    return "FATAL:" not in text or any(passing in text for passing in _PASSING)


def _lost(exc: BaseException) -> bool:
    """The connection failed or the server went away (not a conflict or a constraint of this transaction)."""
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


class _Row:
    """A row by position or by column name, like sqlite3.Row (so it is a ``proxy.store.db.Row``)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], _Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: _Row(index, values)


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def translate(sql: str) -> str:
    """sqlite3's ``?`` placeholders as psycopg's ``%s``; a ``?`` in quotes kept; every literal ``%`` doubled, since
    psycopg reads placeholders in quoted text too."""

    def swap(match: re.Match[str]) -> str:
        token = match.group()
        return "%s" if token == "?" else token.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


class PgConnection:
    """One connection inside one transaction, in a worker thread."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(translate(sql), tuple(params))

    def notify(self, channel: str, payload: str = "") -> None:
        """Sent to every listener when this transaction commits; never if it rolls back."""
        self._conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


class PgPool:
    def __init__(self, url: str, *, name: str, size: int = 4) -> None:
        self._url = url
        self._name = name
        self._size = size
        self.description = redact(url)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"pg-{name}")
        self._pool: ConnectionPool[Any] | None = None

    async def open(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - the wait runs in a worker thread
        """Connect, waiting up to ``timeout`` for a server that is not up yet; PgUnavailable after, or at once for
        a refusal waiting does not cure (a wrong password, a database that does not exist)."""
        await self._run(lambda: self._open(timeout))

    def _open(self, timeout: float) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            try:
                psycopg.connect(self._url, **connect_kwargs(self._url)).close()
                break
            except psycopg.Error as exc:
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise failure(self._url, exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        pool: ConnectionPool[Any] = ConnectionPool(
            self._url, min_size=1, max_size=self._size, name=self._name, open=False,
            kwargs={**connect_kwargs(self._url), "row_factory": _rows}, check=ConnectionPool.check_connection, timeout=10.0)
        try:
            pool.open(wait=True, timeout=max(deadline - time.monotonic(), 5.0))
        except PoolTimeout as exc:
            pool.close()
            raise failure(self._url, exc) from None
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._run(pool.close)
        # Waits for the threads to end: not on the event loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def transaction(self, work: Callable[[PgConnection], T]) -> T:
        """``work`` in one transaction in a worker thread: committed when it returns, rolled back if it raises."""
        return await self._run(lambda: self._transaction(work))

    def _transaction(self, work: Callable[[PgConnection], T]) -> T:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise RuntimeError(f"the PostgreSQL pool {self._name} is not open")
        try:
            with self._pool.connection() as conn:
                return work(PgConnection(conn))
        except PoolTimeout as exc:
            raise failure(self._url, exc) from None
        except psycopg.OperationalError as exc:
            if not _lost(exc):
                raise
            # The connection broke under the transaction: nothing of it was kept (or it was, if it broke
            # during COMMIT, which nobody can tell), and the pool drops that connection.
            raise failure(self._url, exc) from None

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
