"""The simplest aggregates on PostgreSQL: app settings and per-browser drafts, with the
methods of `SettingsRepository` and `DraftRepository` (studio/repositories.py).

Contract (as on SQLite): a setting is text under a key, replaced whole; a draft is the JSON
text it was saved as, replaced whole, and saving one with `prune_before` also deletes every
draft last saved before that time, in the same transaction. Each write is one upsert, so two
replicas saving at once never fail on the key: the later commit wins.
"""

from __future__ import annotations

from typing import Any


class PgSettingsRepository:
    """App settings in `app_settings`, on a psycopg_pool.ConnectionPool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def get_setting(self, key: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT value FROM app_settings WHERE key = %s", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO app_settings (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, value),
            )

    def delete_setting(self, key: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM app_settings WHERE key = %s", (key,))


class PgDraftRepository:
    """Drafts in `drafts`, on a psycopg_pool.ConnectionPool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def draft_body(self, draft_id: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT body FROM drafts WHERE id = %s", (draft_id,)).fetchone()
        return str(row[0]) if row else None

    def save_draft(self, draft_id: str, body: str, *, now: float, prune_before: float | None = None) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO drafts (id, body, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at",
                (draft_id, body, now),
            )
            if prune_before is not None:
                conn.execute("DELETE FROM drafts WHERE updated_at < %s", (prune_before,))
