"""Deleting images with an undo window.

Contract:
- `Trash.delete(ids)` hides kept images at once: their output rows move to
  state `trashed`, which every gallery, queue, campaign and kit query leaves
  out. Rows and files stay, so `undo(token)` within `window_s` seconds puts
  them back untouched (favourites, collections and text checks included).
- When the window passes, a timer thread deletes the rows and the files no
  other output uses, for good (`TrashRepository.purge_trashed`, `ImageKeeper.delete`).
- A server that stops inside the window ends it: `close()` purges what is
  still trashed, and `purge_all()` at start-up purges what a crash left.
- Undo and purge of one deletion are serialised, so a late Undo either
  restores everything or reports 0 (too late); never half.
Nothing here imports streamlit.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .images import ImageKeeper
from .repositories import TrashRepository

log = logging.getLogger("studio.trash")

UNDO_WINDOW_S = 20.0


@dataclass(frozen=True)
class Deletion:
    """One press of Delete: what it hid, and until when it can be undone (wall clock)."""

    token: str
    output_ids: tuple[int, ...]
    until: float

    def left(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))


class Trash:
    def __init__(
        self, store: TrashRepository, keeper: ImageKeeper, *, window_s: float = UNDO_WINDOW_S
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.window_s = window_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Deletion, threading.Timer]] = {}

    def delete(self, output_ids: Sequence[int]) -> Deletion:
        """Hide `output_ids` now and purge them when the window passes."""
        hidden = self.store.trash_outputs(list(output_ids))
        deletion = Deletion(secrets.token_urlsafe(8), tuple(hidden), time.time() + self.window_s)
        timer = threading.Timer(self.window_s, self._purge, args=(deletion.token,))
        timer.daemon = True
        with self._lock:
            self._pending[deletion.token] = (deletion, timer)
        timer.start()
        return deletion

    def pending(self, token: str) -> Deletion | None:
        with self._lock:
            entry = self._pending.get(token)
        return entry[0] if entry else None

    def undo(self, token: str) -> int:
        """Restore a deletion's images; 0 when its window has passed (they are gone)."""
        with self._lock:
            entry = self._pending.pop(token, None)
            if entry is None:
                return 0
            deletion, timer = entry
            timer.cancel()
            return self.store.restore_outputs(deletion.output_ids)

    def _purge(self, token: str) -> int:
        with self._lock:
            entry = self._pending.pop(token, None)
            if entry is None:  # undone meanwhile
                return 0
            return self._delete_for_good(entry[0].output_ids)

    def _delete_for_good(self, output_ids: Sequence[int] | None) -> int:
        try:
            shas = self.store.purge_trashed(output_ids)
            for sha in shas:
                self.keeper.delete(sha)
        except Exception:  # a timer thread must not die loudly; the next start purges
            log.exception("could not purge deleted images")
            return 0
        return len(shas)

    def purge_all(self) -> int:
        """Purge every trashed image now (start-up: a crash inside a window)."""
        with self._lock:
            for _, timer in self._pending.values():
                timer.cancel()
            self._pending.clear()
            return self._delete_for_good(None)

    def close(self) -> None:
        self.purge_all()
