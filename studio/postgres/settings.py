"""The simplest aggregates on PostgreSQL: app settings and per-browser drafts, the methods of
`SettingsRepository` and `DraftRepository` (studio/repositories.py), as mixins of `PgStore`.

Contract (as on SQLite): a setting is text under a key, replaced whole; a draft is the JSON
text it was saved as, replaced whole, and saving one with `prune_before` also deletes every
draft last saved before that time, in the same transaction. Each write is one upsert, so two
replicas saving at once never fail on the key: the later commit wins.
"""

from __future__ import annotations

from .db import PgDatabase


class PgSettingRows(PgDatabase):
    """`SettingsRepository` over PostgreSQL (`app_settings`)."""

    def get_setting(self, key: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT value FROM app_settings WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        self._write(
            "INSERT INTO app_settings (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    def delete_setting(self, key: str) -> None:
        self._write("DELETE FROM app_settings WHERE key = %s", (key,))

    def setting_once(self, key: str, value: str) -> str:
        """Insert-if-absent, then read: two replicas inserting at once both read the one row
        whose insert committed first (ON CONFLICT DO NOTHING waits for the other's commit)."""
        self._write(
            "INSERT INTO app_settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
            (key, value),
        )
        stored = self.get_setting(key)
        assert stored is not None  # inserted above, and only delete_setting removes it
        return stored


class PgDraftRows(PgDatabase):
    """`DraftRepository` over PostgreSQL (`drafts`)."""

    def draft_body(self, draft_id: str) -> str | None:
        """The body last saved under `draft_id`, as saved; None when there is none."""
        with self._read() as c:
            row = c.execute("SELECT body FROM drafts WHERE id = %s", (draft_id,)).fetchone()
        return None if row is None else str(row["body"])

    def save_draft(self, draft_id: str, body: str, *, now: float, prune_before: float | None = None) -> None:
        """Store `body` under `draft_id` (replacing it), and, with `prune_before`, drop drafts
        untouched since then, in one transaction."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO drafts (id, body, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at",
                (draft_id, body, now),
            )
            if prune_before is not None:
                c.execute("DELETE FROM drafts WHERE updated_at < %s", (prune_before,))
