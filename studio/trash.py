"""Deleting images with an undo window, kept in the database so every process agrees on it.

Contract:
- `Trash.delete(ids)` hides kept images at once: their output rows move to
  state `trashed` under one deletion (a token and `purge_after`, the end of
  its window, stored with them), which every gallery, queue, campaign and kit
  query leaves out. Rows and files stay, so `undo(token)` within `window_s`
  seconds puts them back untouched (favourites, collections and text checks
  included), from this process or any other on the same database.
- Purging is a sweep of what is due (`TrashRepository.purge_due`), never of
  everything: the deleting process sweeps when its window ends (a timer),
  every process sweeps every `sweep_every_s` (`start()`, a small thread) and
  once at start-up. Files go only when no other output uses them
  (`ImageKeeper.delete` on the hashes the sweep returns).
- A stop inside a window does not end it: the deletion stays in the database
  and another process, or the next start, purges it when due; an Undo until
  then still works.
- Undo and purge of one deletion exclude each other in the database, across
  processes too, so a late Undo either restores everything or reports 0 (too
  late); never half.
Nothing here imports streamlit.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from .images import ImageKeeper
from .records import Deletion
from .repositories import TrashRepository

__all__ = ["SWEEP_EVERY_S", "UNDO_WINDOW_S", "Deletion", "Trash"]

log = logging.getLogger("studio.trash")

UNDO_WINDOW_S = 20.0
#: How often every process looks for deletions due (its own are swept on time by a timer).
SWEEP_EVERY_S = 5.0
#: The deleting process's timer fires this long after the window, so its clock has passed it.
_TIMER_SLACK_S = 0.05


class Trash:
    def __init__(
        self,
        store: TrashRepository,
        keeper: ImageKeeper,
        *,
        window_s: float = UNDO_WINDOW_S,
        sweep_every_s: float = SWEEP_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.window_s = window_s
        self.sweep_every_s = sweep_every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def delete(self, output_ids: Sequence[int]) -> Deletion:
        """Hide `output_ids` now, undoable until the window ends; swept when it has."""
        token = secrets.token_urlsafe(8)
        now = self.clock()
        until = now + self.window_s
        hidden = self.store.trash_outputs(list(output_ids), token=token, purge_after=until, now=now)
        deletion = Deletion(token, tuple(hidden), until)
        if hidden and not self._stop.is_set():
            timer = threading.Timer(self.window_s + _TIMER_SLACK_S, self._on_time, args=(token,))
            timer.daemon = True
            with self._lock:
                self._timers[token] = timer
            timer.start()
        return deletion

    def pending(self, token: str) -> Deletion | None:
        """The deletion `token` while it is in the database (not undone, not yet purged),
        whichever process made it; its `left()` says whether Undo can still work."""
        return self.store.deletion(token)

    def undo(self, token: str) -> int:
        """Restore a deletion's images; 0 when its window has passed (they are gone, or go
        at the next sweep) or it was undone already."""
        with self._lock:
            timer = self._timers.pop(token, None)
        if timer is not None:
            timer.cancel()
        return self.store.restore_deletion(token, self.clock())

    def sweep(self, now: float | None = None) -> int:
        """Purge every deletion whose window has ended (any process's); how many files went.

        Never raises: a sweep that meets an outage logs it, and the next one tries again."""
        try:
            shas = self.store.purge_due(self.clock() if now is None else now)
            for sha in shas:
                self.keeper.delete(sha)
        except Exception:  # a timer or sweeper thread must not die loudly; the next sweep purges
            log.exception("could not purge deleted images")
            return 0
        return len(shas)

    def _on_time(self, token: str) -> None:
        with self._lock:
            self._timers.pop(token, None)
        self.sweep()

    def start(self) -> Trash:
        """Sweep now (deletions a stopped or crashed process left), then every `sweep_every_s`."""
        self.sweep()
        if self._thread is None:
            self._thread = threading.Thread(target=self._sweeper, name="trash-sweep", daemon=True)
            self._thread.start()
        return self

    def _sweeper(self) -> None:
        while not self._stop.wait(self.sweep_every_s):
            self.sweep()

    def close(self) -> None:
        """Stop the timers and the sweeper. Windows still open stay open in the database:
        another process, or the next start, purges them when due."""
        self._stop.set()
        with self._lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
