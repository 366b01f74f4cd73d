"""App settings (the Settings page's edits): a key-value table (schema slot 4)."""

from __future__ import annotations

from .db import Database


class SettingRows(Database):
    """`SettingsRepository` over SQLite."""

    def get_setting(self, key: str) -> str | None:
        r = self._conn().execute("SELECT value FROM app_settings WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def set_setting(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO app_settings (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_setting(self, key: str) -> None:
        self._write("DELETE FROM app_settings WHERE key = ?", (key,))

    def setting_once(self, key: str, value: str) -> str:
        self._write(
            "INSERT INTO app_settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value)
        )
        stored = self.get_setting(key)
        assert stored is not None  # inserted above, and only delete_setting removes it
        return stored
