"""The Studio's unsent drafts, one JSON body per browser id (schema slot 7)."""

from __future__ import annotations

from .db import Database


class DraftRows(Database):
    """`DraftRepository` over SQLite."""

    def draft_body(self, draft_id: str) -> str | None:
        """The body last saved under `draft_id`, as saved; None when there is none."""
        row = self._conn().execute("SELECT body FROM drafts WHERE id = ?", (draft_id,)).fetchone()
        return None if row is None else str(row[0])

    def save_draft(self, draft_id: str, body: str, *, now: float, prune_before: float | None = None) -> None:
        """Store `body` under `draft_id` (replacing it), and, with `prune_before`, drop drafts
        untouched since then, in one transaction."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO drafts (id, body, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                (draft_id, body, now),
            )
            if prune_before is not None:
                c.execute("DELETE FROM drafts WHERE updated_at < ?", (prune_before,))
