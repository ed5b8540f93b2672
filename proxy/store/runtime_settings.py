"""Run-time settings (registry.default, registry.whitelist) with where each value came from.

Precedence: a value set through the API stays until changed or unset through
the API; otherwise the config file's value applies at start; otherwise the
default. Unsetting goes back to the file's value the proxy started with, or
to the default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.store.db import Conn, Database

__all__ = ["SettingValue", "SettingsStore"]



@dataclass(frozen=True)
class SettingValue:
    name: str
    value: str
    source: str  # "default", "config" or "api"
    updated: float | None = None


class SettingsStore:
    def __init__(self, db: Database, defaults: Mapping[str, str]) -> None:
        """``defaults``: every setting's name and its value when neither the file nor the API set one."""
        self._db = db
        self._defaults = dict(defaults)
        self._config_values: dict[str, str | None] = {}

    async def all(self) -> dict[str, SettingValue]:
        rows = await self._db.read(lambda c: c.execute("SELECT * FROM settings").fetchall())
        values = {name: SettingValue(name, value, "default") for name, value in self._defaults.items()}
        for row in rows:
            if row["name"] in values:
                values[row["name"]] = SettingValue(row["name"], row["value"], row["source"], row["updated"])
        return values

    async def set(self, name: str, value: str) -> SettingValue:
        now = time.time()
        await self._db.transaction(lambda c: c.execute(
            "INSERT INTO settings (name, value, source, updated) VALUES (?, ?, 'api', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value, source = 'api', updated = excluded.updated",
            (name, value, now)))
        return SettingValue(name, value, "api", now)

    async def unset(self, name: str) -> SettingValue:
        """Forget the API's value: back to the config file's, or the default."""
        value = self._config_values.get(name)
        now = time.time()

        def unset(conn: Conn) -> None:
            conn.execute("DELETE FROM settings WHERE name = ?", (name,))
            if value is not None:
                self._from_file(conn, name, value, now)

        await self._db.transaction(unset)
        if value is None:
            return SettingValue(name, self._defaults[name], "default")
        return SettingValue(name, value, "config", now)

    async def seed(self, config_values: dict[str, str | None]) -> None:
        """Apply the config file's values unless the API changed the setting since."""
        self._config_values = dict(config_values)

        def seed(conn: Conn) -> None:
            now = time.time()
            for name, value in config_values.items():
                row = conn.execute("SELECT source FROM settings WHERE name = ?", (name,)).fetchone()
                if row is not None and row["source"] == "api":
                    continue
                if value is None:
                    conn.execute("DELETE FROM settings WHERE name = ?", (name,))
                else:
                    self._from_file(conn, name, value, now)

        await self._db.transaction(seed)

    @staticmethod
    def _from_file(conn: Conn, name: str, value: str, now: float) -> None:
        conn.execute("INSERT INTO settings (name, value, source, updated) VALUES (?, ?, 'config', ?)"
                     " ON CONFLICT (name) DO UPDATE SET value = excluded.value, source = 'config',"
                     " updated = excluded.updated", (name, value, now))
