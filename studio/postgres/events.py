"""The event bus across replicas: `studio.events.EventBus` whose events also travel through
PostgreSQL's LISTEN/NOTIFY, so a page on any replica hears what a tracker on another did.

Contract:
- `PgEventBus` is an `EventBus`: `publish` tells this process's listeners at once (with
  this bus's sequence number, exactly as before) and then sends one NOTIFY on `channel`
  carrying the kind and ids and this bus's `boot` id. Every other replica's bus, LISTENing
  on a connection of its own, publishes the event to its listeners with its own sequence
  number; a bus ignores the notifications it sent itself, so nobody hears an event twice.
- A NOTIFY sent inside a transaction is delivered when it commits (PostgreSQL's rule), so
  a listener never hears of a row before it can read it; `publish` here runs on its own
  autocommitted connection, after the tracker's write committed.
- The database down costs no local event: the NOTIFY is dropped (logged without the
  URL) and the listener reconnects with backoff. After a reconnect the bus publishes one
  CHANGED event, since it may have missed others: pages reload what they show.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import CHANGED, KINDS, Event, EventBus

log = logging.getLogger(__name__)

CHANNEL = "studio_events"


@dataclass
class PgEventBus(EventBus):
    """An EventBus bridged across processes by LISTEN/NOTIFY on `channel`.

    `connect` makes a new psycopg connection (the listener's own, held for as long as the
    bus runs); `notify_pool`, when given, lends the connection each NOTIFY is sent on."""

    connect: Callable[[], Any] = field(default=None, repr=False)  # type: ignore[assignment]
    notify_pool: Any = field(default=None, repr=False)
    channel: str = CHANNEL
    reconnect_s: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.connect is None:
            raise ValueError("PgEventBus needs connect(): a function that opens a psycopg connection")
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._listen_conn: Any = None
        self._notify_conn: Any = None
        self._notify_lock = threading.Lock()
        self.reconnects = 0

    # -- sending ----------------------------------------------------------------
    def publish(self, kind: str, submission_id: int | None = None, output_id: int | None = None) -> Event:
        event = super().publish(kind, submission_id, output_id)
        payload = json.dumps({"b": self.boot, "k": kind, "s": submission_id, "o": output_id})
        try:
            self._notify(payload)
        except Exception as exc:  # the local listeners heard it; other replicas catch up on reconnect
            log.warning("event not sent to other replicas (%s)", type(exc).__name__)
        return event

    def _notify(self, payload: str) -> None:
        if self.notify_pool is not None:
            with self.notify_pool.connection() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            return
        with self._notify_lock:
            if self._notify_conn is None or self._notify_conn.closed:
                self._notify_conn = self.connect()
                self._notify_conn.autocommit = True
            try:
                self._notify_conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except Exception:
                self._notify_conn.close()
                self._notify_conn = None
                raise

    # -- hearing ------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> PgEventBus:
        """Start the listener thread; returns once it LISTENs (or after `timeout`)."""
        self._thread = threading.Thread(target=self._listen_loop, name="pg-events", daemon=True)
        self._thread.start()
        self._listening.wait(timeout)
        return self

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def wait_listening(self, timeout: float = 10.0) -> bool:
        return self._listening.wait(timeout)

    def stop(self) -> None:
        """Stop listening (within the listener's half-second wait) and close the connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._notify_lock:
            if self._notify_conn is not None:
                self._notify_conn.close()
                self._notify_conn = None

    def _listen_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                conn = self.connect()
                conn.autocommit = True
                self._listen_conn = conn
                with conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self._listening.set()
                    if not first:
                        self.reconnects += 1
                        EventBus.publish(self, CHANGED)  # others may have happened while deaf
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._heard(note.payload)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._listening.clear()
                log.warning("event listener lost the database (%s); reconnecting", type(exc).__name__)
                self._stop.wait(self.reconnect_s)
            finally:
                self._listen_conn = None
        self._listening.clear()

    def _heard(self, payload: str) -> None:
        try:
            d = json.loads(payload)
        except ValueError:
            return
        if not isinstance(d, dict) or d.get("b") == self.boot or d.get("k") not in KINDS:
            return
        sid, oid = d.get("s"), d.get("o")
        EventBus.publish(
            self,
            str(d["k"]),
            sid if isinstance(sid, int) else None,
            oid if isinstance(oid, int) else None,
        )


def bus_for(database: Any) -> PgEventBus:
    """A started `PgEventBus` on `database` (config.DatabaseSettings, PostgreSQL): its own
    listening connection, listening before this returns (or after its 10 s wait)."""
    import psycopg

    from .pool import connection_options

    url = database.url
    return PgEventBus(connect=lambda: psycopg.connect(url, **connection_options(timeout=10))).start()
