"""The tracker's event bus: what changed, told to whoever listens, the moment it changes.

The tracker (and the text check, and page actions) `publish` a small event
whenever a task's or an image's state changes: a submission recorded, a task
created or refused, a status HiAPI reported, an image kept or failed, a text
check recorded. Each event gets the next sequence number; `boot` is a random
id of this bus, so a listener that reconnects after a server restart (the
sequence starts again) knows it must catch up.

Listeners are plain callables called on the publishing thread: they must
return at once (the SSE route's listener only wakes its event loop). A
listener that raises is dropped, never the publisher's problem. UI-free.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

NEW = "new"  # submissions recorded
PROGRESS = "progress"  # created, a status or a problem noted while still running
KEPT = "kept"  # an image is on disk with its thumbnail
FAILED = "failed"  # a task failed or was refused, or an image could not be kept
CHECKED = "checked"  # a text check was recorded
CHANGED = "changed"  # anything else a page shows (favourite, deletion)
KIT = "kit"  # a delivery kit wrote a file or finished (`job` is its id)
KINDS = frozenset({NEW, PROGRESS, KEPT, FAILED, CHECKED, CHANGED, KIT})


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    submission_id: int | None = None
    output_id: int | None = None
    job: str | None = None  # a background job's id (a delivery kit being built)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "kind": self.kind, "sid": self.submission_id, "oid": self.output_id, "job": self.job,
        }  # fmt: skip


@dataclass
class EventBus:
    """Thread-safe publish/subscribe with a sequence number and a short memory."""

    memory: int = 512
    boot: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: deque[Event] = deque(maxlen=self.memory)
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def seq(self) -> int:
        """The last sequence number given out (0 before any event)."""
        with self._lock:
            return self._seq

    def publish(self, kind: str, submission_id: int | None = None, output_id: int | None = None) -> Event:
        if kind not in KINDS:
            raise ValueError(f"event kind {kind!r} is not one of {sorted(KINDS)}")
        return self._tell(Event(0, kind, submission_id, output_id))

    def publish_kit(self, job: str) -> Event:
        """A delivery kit moved (a file written, or done): told to this process's listeners only,
        as the kit is built and served by this process (a team bus does not send it on)."""
        return self._tell(Event(0, KIT, job=job))

    def _tell(self, draft: Event) -> Event:
        with self._lock:
            self._seq += 1
            event = replace(draft, seq=self._seq)
            self._recent.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:  # a gone listener must not stop the tracker
                log.debug("event listener dropped: %r", exc)
                self.unsubscribe(listener)
        return event

    def since(self, seq: int) -> list[Event] | None:
        """Events after `seq`, or None when some were forgotten (the caller reloads everything)."""
        with self._lock:
            if seq >= self._seq:
                return []
            if not self._recent or self._recent[0].seq > seq + 1:
                return None
            return [e for e in self._recent if e.seq > seq]

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call `listener(event)` for every later event; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self.unsubscribe(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)


def described(events: list[Event] | None, cap: int = 64) -> list[dict[str, Any]] | None:
    """What a push message says happened: the events as dicts, or None when they are unknown
    (forgotten by the bus) or more than `cap` (a listener then assumes everything changed)."""
    if events is None or len(events) > cap:
        return None
    return [{k: v for k, v in e.to_dict().items() if k != "seq" and v is not None} for e in events]


class ViewCache:
    """One view per (bus position, request), built once however many pages ask at once.

    Every open page fetches its view model when told of a change, so twenty
    pages told of the same change ask for the same view within milliseconds.
    `get(key, build)` keys the answer by `key` and the bus's (boot, seq) *read
    before building*: a page never gets a view older than the change it was
    told of, and while one thread builds, the others asking for the same key
    wait for its answer (single flight). Answers are kept `ttl` seconds (the
    views' elapsed-time counters are that stale at most) and at most `size` of
    them. A build that raises is not kept: each waiter then builds its own.
    """

    def __init__(
        self, bus: EventBus, *, ttl: float = 1.0, size: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bus = bus
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._done: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._building: dict[tuple[Any, ...], threading.Event] = {}
        self.builds = 0

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        full = (self.bus.boot, self.bus.seq, key)
        while True:
            with self._lock:
                hit = self._done.get(full)
                if hit is not None and self.clock() - hit[0] <= self.ttl:
                    return hit[1]
                waiting = self._building.get(full)
                if waiting is None:
                    waiting = self._building[full] = threading.Event()
                    break
            waiting.wait(30)
            with self._lock:
                hit = self._done.get(full)
                if hit is not None:
                    return hit[1]
            return build()  # the other build failed: this caller's own answer, not kept
        try:
            value = build()
            with self._lock:
                self.builds += 1
                self._done[full] = (self.clock(), value)
                while len(self._done) > self.size:
                    self._done.pop(next(iter(self._done)))
            return value
        finally:
            with self._lock:
                self._building.pop(full, None)
            waiting.set()


class ChangeWatch:
    """Tells a bus about changes other processes made (a web process beside its workers).

    `version()` must return a number that changes whenever another process
    commits (`Store.data_version`, SQLite's free `PRAGMA data_version`); every
    `every` seconds a changed number publishes one CHANGED event, so pages on
    this process fetch a fresh view. A listener-side equivalent of PostgreSQL's
    LISTEN/NOTIFY, for the one-file database.
    """

    def __init__(self, bus: EventBus, version: Callable[[], int], *, every: float = 0.5) -> None:
        self.bus = bus
        self.version = version
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-watch", daemon=True)

    def start(self) -> ChangeWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        last: int | None = None
        while not self._stop.wait(0 if last is None else self.every):
            try:
                now = self.version()
            except Exception as exc:  # a busy or closed database: try again next time
                log.debug("change watch: %r", exc)
                continue
            if last is not None and now != last:
                self.bus.publish(CHANGED)
            last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
