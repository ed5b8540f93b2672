"""A PostgreSQL cluster of the tests' own, on loopback, for the state and the shared cache index.

Debian's server binaries (/usr/lib/postgresql/<version>/bin) refuse to run
as root, so as root they run as the ``postgres`` system user, in a temp dir
made for and owned by it. The cluster has one superuser with a password
(scram over TCP, as a real deployment authenticates), durability off for
speed, and lives for the session; each test takes a ``fresh_database()``.
``stop()`` and ``start()`` take it down and bring it back on the same port.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PgServer", "pg_url", "postgres"]

USER = "registry_proxy_test"
_DATABASES = itertools.count(1)


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self._data = self.root / "data"
        self._log = self.root / "server.log"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(12)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        return f"postgresql://{USER}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self._data), "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
        pwfile.unlink()

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off"
                   " -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self._data), "-l", str(self._log), "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions cleanly; ``immediate`` is a crash, as a node that vanished."""
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def fresh_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(_DATABASES)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        # Already stopped by a test, or never started: nothing to stop, and not a failure.
        self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            log = self._log.read_text()[-3000:] if self._log.exists() else ""
            pytest.fail(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}\n{log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the session."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    server = PgServer(bin_dir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """The URL of a new, empty database on the session's cluster, with the password in it."""
    return postgres.fresh_database()
