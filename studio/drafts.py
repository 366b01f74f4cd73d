"""The Studio's unsent draft, kept in the database per browser (a `DraftRepository`).

Contract:
- A draft is a small JSON document (prompt, ratios, resolution, campaign rows,
  campaign name, `ext` quality or null, background or null) stored under an opaque id the browser keeps in a long-lived
  cookie; whoever holds the id holds the draft, nothing else.
- `save` writes only when the document differs from what was last written for
  that id by this `Drafts` (a rerun without a change costs no write), so the
  page may call it after every run.
- `load` returns None for an unknown id or an unreadable body, never raises on
  bad data: a broken draft is an empty editor, not a broken page.
- Drafts untouched for `MAX_AGE_DAYS` are dropped when a new one is first saved.
Nothing here imports streamlit.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from typing import Any

from .repositories import DraftRepository

COOKIE = "studio_draft"
MAX_AGE_DAYS = 180
_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def new_id() -> str:
    """A fresh random draft id (128 bits, URL- and cookie-safe)."""
    return secrets.token_urlsafe(16)


def valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


class Drafts:
    """Load and save drafts in a `DraftRepository` (thread-safe: the store is, and the cache has a lock)."""

    def __init__(self, store: DraftRepository) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}  # id -> body last written or read

    def load(self, draft_id: str) -> dict[str, Any] | None:
        raw = self._store.draft_body(draft_id)
        if raw is None:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        with self._lock:
            self._last[draft_id] = raw
        return body

    def save(self, draft_id: str, draft: dict[str, Any], *, now: float | None = None) -> bool:
        """Store the draft; True when something was written (it differed from the last write)."""
        body = json.dumps(draft, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        with self._lock:
            before = self._last.get(draft_id)
            if before == body:
                return False
            first = draft_id not in self._last
            self._last[draft_id] = body
        at = time.time() if now is None else now
        try:
            self._store.save_draft(
                draft_id, body, now=at, prune_before=at - MAX_AGE_DAYS * 86_400 if first else None
            )
        except BaseException:
            with self._lock:  # not written (the database away): the next save writes it
                if self._last.get(draft_id) == body:
                    if before is None:
                        self._last.pop(draft_id, None)
                    else:
                        self._last[draft_id] = before
            raise
        return True
